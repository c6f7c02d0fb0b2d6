"""The malloc a batch kernel starts with: chosen by CQA_MALLOC, seen in the child's own memory map."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import malloc_of_a_child

from cqa_utils import frontend, malloc

INSTALLED = [name for name in malloc.PREFERENCE if malloc.library_path(name)]
APT = "apt-get install libtcmalloc-minimal4 libjemalloc2"


def test_auto_takes_the_first_installed_malloc_of_the_preference(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    expected = {"LD_PRELOAD": malloc.library_path(INSTALLED[0])} if INSTALLED else {}
    assert malloc.preload_env("auto") == malloc.preload_env("") == expected
    assert malloc.preload_env("glibc") == {}


def test_a_preload_the_user_set_is_left_alone(monkeypatch):
    monkeypatch.setenv("LD_PRELOAD", "libsomething.so")
    assert malloc.preload_env("tcmalloc") == {}


def test_a_misspelt_choice_names_the_one_meant_and_an_absent_one_its_apt_package(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with pytest.raises(ValueError, match=r"CQA_MALLOC='tcmaloc': did you mean 'tcmalloc'\? accepted values: auto"):
        malloc.preload_env("tcmaloc")
    monkeypatch.setattr(malloc.ctypes.util, "find_library", lambda name: None)  # a machine without it
    with pytest.raises(RuntimeError, match=r"libjemalloc is not installed \(apt-get install libjemalloc2\)"):
        malloc.preload_env("jemalloc")
    assert malloc.preload_env("auto") == {}  # auto falls back to glibc's


def test_kernels_started_in_the_batch_environment_run_the_chosen_malloc(monkeypatch):
    if not INSTALLED:
        pytest.skip(f"neither tcmalloc nor jemalloc is installed: {APT}")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    code = "from cqa_utils.malloc import malloc_in_use; print(malloc_in_use())"
    for choice, expected in [("auto", INSTALLED[0]), ("glibc", "glibc"), *[(name, name) for name in INSTALLED]]:
        monkeypatch.setenv(malloc.CHOICE_VAR, choice)
        with frontend.batch_environment():
            child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert child.stdout.strip() == expected, choice
        assert "LD_PRELOAD" not in os.environ  # restored


def test_a_child_without_a_preload_runs_glibc():
    assert malloc_of_a_child({"LD_PRELOAD": ""}) == "glibc"


def test_the_launcher_runs_a_command_under_the_choice_and_refuses_a_bad_one(monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    code = "from cqa_utils.malloc import malloc_in_use; print(malloc_in_use())"
    launch = [sys.executable, "-m", "cqa_utils.malloc", sys.executable, "-c", code]
    for choice, expected in [("glibc", "glibc"), *[(name, name) for name in INSTALLED]]:
        child = subprocess.run(launch, env={**os.environ, malloc.CHOICE_VAR: choice}, capture_output=True, text=True)
        assert (child.returncode, child.stdout.strip()) == (0, expected), child.stderr
    bad = subprocess.run(launch, env={**os.environ, malloc.CHOICE_VAR: "jemaloc"}, capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean 'jemalloc'?" in bad.stderr and not bad.stdout

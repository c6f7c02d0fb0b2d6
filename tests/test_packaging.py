"""What ships beside the code: the citation file and the pins that pip and conda install."""
import copy
import json
import re
import subprocess
import sys
import tomllib

import jsonschema
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from conftest import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = PROJECT_ROOT / "requirements.lock"
CFF_SCHEMA = PROJECT_ROOT / "tests" / "schemas" / "citation-file-format-1.2.0.json"


def pins(requirements) -> dict[str, str]:
    """``{"torch": "2.13.0", ...}`` from ``name==version`` lines; names normalised as pip does (PEP 503)."""
    found = {}
    for line in requirements:
        name, sep, version = line.partition("==")
        if sep:
            found[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.split()[0].strip()
    return found


def pyproject_pins() -> dict[str, str]:
    """Every pinned requirement of pyproject.toml: the dependencies and every extra."""
    project = PYPROJECT["project"]
    return pins(project["dependencies"] + sum(project["optional-dependencies"].values(), []))


def citation() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def validate_cff(document: dict) -> None:
    """What ``cffconvert --validate`` does: check against the CFF 1.2.0 JSON schema (tests/schemas/README.md
    says why the schema is vendored instead of installing cffconvert)."""
    jsonschema.validate(document, json.loads(CFF_SCHEMA.read_text(encoding="utf-8")),
                        cls=jsonschema.Draft7Validator)


def test_citation_cff_is_valid_cff_1_2_0_and_cites_the_paper():
    document = citation()
    validate_cff(document)
    assert document["version"] == PYPROJECT["project"]["version"]
    assert document["license"] == PYPROJECT["project"]["license"]
    paper = document["preferred-citation"]
    assert paper["title"].startswith("Creative Quality Alignment")
    assert [a["family-names"] for a in paper["authors"]] == ["Zou", "Xu"]
    assert "2605.25977" in paper["url"]


@pytest.mark.parametrize("breakage", ["no authors", "unknown key", "bad licence"])
def test_the_citation_check_rejects_a_broken_file(breakage):
    document = copy.deepcopy(citation())
    if breakage == "no authors":
        del document["authors"]
    elif breakage == "unknown key":
        document["preferred-citation"]["arxiv"] = "2605.25977"
    else:
        document["license"] = "Apache 2"
    with pytest.raises(jsonschema.ValidationError):
        validate_cff(document)


def test_environment_yml_pins_what_pyproject_pins():
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == pyproject_pins()


def test_the_lock_file_pins_every_pyproject_pin_at_its_version():
    locked = pins(line for line in LOCK.read_text(encoding="utf-8").splitlines() if not line.startswith((" ", "#")))
    missing = sorted(set(pyproject_pins()) - set(locked))
    assert not missing, f"{LOCK.name} lacks {missing}: run `make lock`"
    # "==2.13.0" admits the CPU build "2.13.0+cpu" the lock takes, as pip does; any other version drifted.
    drifted = {name: (pin, locked[name]) for name, pin in pyproject_pins().items()
               if not SpecifierSet(f"=={pin}").contains(locked[name])}
    assert not drifted, f"pyproject.toml and {LOCK.name} disagree (pin, locked): {drifted}; run `make lock`"
    assert locked["torch"].endswith("+cpu"), f"{LOCK.name} takes torch {locked['torch']}, not the CPU build"


@pytest.mark.parametrize("lock, model", [("requirements-nodeps.lock", "SMOLLM2"),
                                         ("requirements-gemma.lock", "GEMMA3")])
def test_each_embedded_models_packages_are_pinned_with_a_hash_in_its_lock(lock, model):
    from cqa_utils import embedded

    text = (PROJECT_ROOT / lock).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert sorted(pins(lines)) == sorted(getattr(embedded, model).packages), f"{lock} is stale: run `make lock`"
    assert all(re.search(r" --hash=sha256:[0-9a-f]{64}$", line) for line in lines), lines
    assert lock in getattr(embedded, model).install  # the error messages name the file that installs them


# --- make setup: where pip finds torch's CPU build, and what other Python versions do -----------------------------

TORCH_INDEX = "https://download.pytorch.org/whl/cpu"  # PyTorch's CPU wheels; PyPI has only the CUDA build


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)


def lock_entry(text: str, name: str) -> list[str]:
    """The lines of one package's entry in a pip-compile lock: its pin and hashes, no comments."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].lstrip().startswith("--hash="))
    return lines[start:end]


def test_setup_installs_torchs_cpu_build_from_its_index_then_the_rest_of_the_lock_without_it(tmp_path):
    venv = tmp_path / "venv"
    commands = make("-n", "-B", "setup", f"VENV={venv}").stdout
    installs = [line for line in commands.splitlines() if " -m pip install " in line]
    torch_step, lock_step = installs[0], installs[1]
    assert f"--extra-index-url {TORCH_INDEX} -r {venv}/torch.lock" in torch_step
    assert "--require-hashes --no-deps" in torch_step
    # The rest asks no other index: offline, pip would spend its retries (~10 s) on it for each of ~170 packages.
    assert "--require-hashes -r requirements.lock" in lock_step and "index-url" not in lock_step
    # The torch step's requirement is the lock's own entry, made by the Makefile's rule: pin and every hash.
    assert make(f"VENV={venv}", f"{venv}/torch.lock").returncode == 0
    entry = lock_entry(LOCK.read_text(encoding="utf-8"), "torch")
    assert (venv / "torch.lock").read_text(encoding="utf-8").splitlines() == entry
    assert entry[0].startswith("torch==") and entry[0].split()[0].endswith("+cpu") and len(entry) >= 2


def test_make_lock_resolves_torch_on_the_same_index_and_writes_no_index_into_the_lock():
    command = make("-n", "lock").stdout.split("pip-compile", 1)[1].split("\n\n", 1)[0]
    assert f"--extra-index-url {TORCH_INDEX}" in command and "--no-emit-index-url" in command
    assert "index-url" not in "".join(line for line in LOCK.read_text(encoding="utf-8").splitlines()
                                      if not line.startswith("#"))


def test_a_failing_setup_step_shows_its_output_and_a_passing_one_a_single_line(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "bin").write_text("a file where the virtualenv's bin/ folder goes")  # so `python -m venv` fails
    done = make("-B", f"VENV={venv}", f"PYTHON={sys.executable}", f"{venv}/.installed")
    assert done.returncode != 0 and not (venv / ".installed").exists()
    assert done.stdout.splitlines() == [f"make setup: create the virtualenv {venv}"]
    assert "Error" in done.stderr and f"make setup: failed to create the virtualenv {venv}" in done.stderr
    assert f"the log of every step: {venv}/setup.log" in done.stderr
    assert (venv / "setup.log").read_text(encoding="utf-8") in done.stderr


def test_setup_on_another_python_stops_and_says_what_to_do(tmp_path):
    python = tmp_path / "python3.12"  # answers as Python 3.12 does to the Makefile's two questions
    python.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.12.1" && exit 0\nexit 1  # not 3.11\n')
    python.chmod(0o755)
    done = make("-B", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}", f"{tmp_path / 'venv'}/.installed")
    assert done.returncode != 0 and not (tmp_path / "venv" / "bin").exists()
    assert "requirements.lock is for Python 3.11, not Python 3.12" in done.stderr
    assert "README: Other Python versions" in done.stderr


def test_the_readme_says_where_torch_comes_from_and_what_other_python_versions_do():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert TORCH_INDEX in readme and "`TORCH_INDEX` in the Makefile" in readme
    assert "**Other Python versions.**" in readme  # the heading the Makefile's error names
    others = readme.split("**Other Python versions.**", 1)[1].split("\n#", 1)[0]
    assert "conda env create -f environment.yml" in others and 'make reproduce PYTHON="' in others
    env = (PROJECT_ROOT / "environment.yml").read_text(encoding="utf-8")
    assert f"- --extra-index-url {TORCH_INDEX}\n" in env and "python=3.11" in env
    assert "pip install --require-hashes --no-deps -r requirements-nodeps.lock" in env  # the embedded model

"""Which malloc the study's processes run, and the preload that gives batch kernels a better one.

Stage 02 frees and allocates buffers of a new size at every step (each example has its own
length), and glibc's malloc keeps much of what is freed: the training kernel's peak RSS climbs
over a run while the tensors it holds stay the same size. tcmalloc and jemalloc hold less, and
tcmalloc is also faster here (``benchmarks/bench_allocator.py`` measures both on the machine at
hand). They are system libraries, not Python packages (apt: ``libtcmalloc-minimal4``,
``libjemalloc2``), and reach a process only through ``LD_PRELOAD`` when it starts, so ``cqa run``
sets it for the notebook kernels it starts (:func:`cqa_utils.frontend.batch_environment`) and
each stage's environment.json records the malloc it ran. The allocator changes memory and
speed, never a number: the bench's losses agree to every digit printed.

``CQA_MALLOC`` chooses: ``auto`` (or unset) takes the first of :data:`PREFERENCE` installed and
glibc's where none is; ``glibc`` or a name from :data:`LIBRARIES` asks for that one. A
``LD_PRELOAD`` the user set is left alone. ``python -m cqa_utils.malloc CMD …`` runs a command
under that choice (``make lab`` starts JupyterLab so, and its kernels inherit it).
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

CHOICE_VAR = "CQA_MALLOC"
LIBRARIES = {"tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc", "mimalloc": "mimalloc"}  # find_library names
PACKAGES = {"tcmalloc": "libtcmalloc-minimal4", "jemalloc": "libjemalloc2", "mimalloc": "libmimalloc2.0"}  # apt
PREFERENCE = ("tcmalloc", "jemalloc")  # the bench's order: tcmalloc the fastest, both ~0.8x glibc's peak


def malloc_in_use() -> str:
    """Which malloc this process runs: a preloaded one (``LD_PRELOAD``) or glibc's."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return "unknown"
    text = maps.read_text()
    return next((name for name, library in LIBRARIES.items() if f"lib{library}" in text), "glibc")


def library_path(name: str) -> str | None:
    """The shared library that provides malloc ``name``, or None where it is not installed."""
    return ctypes.util.find_library(LIBRARIES[name])


def preload_env(choice: str | None = None) -> dict[str, str]:
    """The ``LD_PRELOAD`` a batch kernel should start with, as an environment addition.

    ``choice`` defaults to ``$CQA_MALLOC``. Empty where glibc's is chosen, where ``auto`` finds
    none installed, or where ``LD_PRELOAD`` is already set. A malloc asked for by name that is
    not installed, or a name that is none of them, is an error (naming the apt package, or the
    name meant).
    """
    if os.environ.get("LD_PRELOAD"):
        return {}
    choice = (choice if choice is not None else os.environ.get(CHOICE_VAR, "")) or "auto"
    if choice == "glibc":
        return {}
    if choice == "auto":
        found = next((path for path in map(library_path, PREFERENCE) if path), None)
        return {"LD_PRELOAD": found} if found else {}
    if choice not in LIBRARIES:
        from .data import likely_typo

        known = ("auto", "glibc", *LIBRARIES)
        guess = likely_typo(choice, known)
        raise ValueError(f"{CHOICE_VAR}={choice!r}: " + (f"did you mean {guess!r}? " if guess else "")
                         + f"accepted values: {', '.join(known)}")
    path = library_path(choice)
    if path is None:
        raise RuntimeError(f"{CHOICE_VAR}={choice}: lib{LIBRARIES[choice]} is not installed "
                           f"(apt-get install {PACKAGES[choice]}), or set {CHOICE_VAR}=auto")
    return {"LD_PRELOAD": path}


def main(argv: list[str] | None = None) -> None:
    """Replace this process with ``argv`` run under the chosen malloc; a bad choice exits 2."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        sys.exit("usage: python -m cqa_utils.malloc COMMAND [ARG ...]")
    try:
        extra = preload_env()
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    os.execvpe(argv[0], argv, {**os.environ, **extra})


if __name__ == "__main__":
    main()

"""Where the code runs: a Jupyter front end someone looks at, a terminal, or a batch run.

``cqa run`` executes the notebooks headless with papermill and marks their kernels with
``CQA_BATCH=1`` (:func:`batch_environment`); a kernel cannot tell a papermill client from
JupyterLab otherwise. Progress reports (:mod:`cqa_utils.progress`) and notebook 03's
explorer (:mod:`cqa_utils.explorer`) read this to choose between live widgets and output
that reads well in a log file and an executed notebook. Running papermill by hand, set
``CQA_BATCH=1`` for the same behaviour. The kernels also start with the malloc that holds
stage 02's memory down (:mod:`cqa_utils.malloc`).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

BATCH_VAR = "CQA_BATCH"
# What a batch kernel's environment adds: the batch mark, and the libraries' own bars off
# (transformers' sub-second "Loading weights" bar alone left 4-6 outputs in a cell).
BATCH_ENV = {BATCH_VAR: "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def batch_run() -> bool:
    """Whether this process runs headless for ``cqa run`` (or anyone who set ``CQA_BATCH=1``)."""
    value = os.environ.get(BATCH_VAR, "")
    if value not in ("", "0", "1"):
        raise ValueError(f"{BATCH_VAR}={value!r}; accepted values: 1 (batch run), 0 or unset")
    return value == "1"


def in_jupyter_kernel() -> bool:
    """Whether this is an IPython kernel (JupyterLab, VS Code, or papermill's client)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def interactive_notebook() -> bool:
    """Whether someone can use widgets here: a Jupyter kernel that is not a batch run."""
    return in_jupyter_kernel() and not batch_run()


@contextlib.contextmanager
def batch_environment() -> Iterator[None]:
    """:data:`BATCH_ENV` and the malloc preload (:func:`cqa_utils.malloc.preload_env`) set for the
    processes started inside (notebook kernels inherit them), then restored."""
    from .malloc import preload_env

    added = {**BATCH_ENV, **preload_env()}
    saved = {key: os.environ.get(key) for key in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""What every notebook's setup cell calls: resolve the config and show what runs where.

Keeps the notebooks' first code cell to one line, identical in papermill and JupyterLab.
"""
from __future__ import annotations

from .config import Config, load_config
from .runs import package_versions, run_dir


def open_notebook(config: str, run_name: str = "", overrides: dict | None = None, show: bool = True) -> Config:
    """Resolve ``config`` + ``run_name`` + ``overrides`` and print the run and package versions."""
    merged = dict(overrides or {})
    if run_name:
        merged["run.name"] = run_name
    cfg = load_config(config, merged)
    if show:
        print(f"config   : {config}  (overrides: {merged or 'none'})")
        print(f"run dir  : {run_dir(cfg)}")
        print(f"model    : {cfg.model.name}  device={cfg.model.device}  quant={cfg.model.quant}")
        versions = package_versions()
        print("versions : " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return cfg

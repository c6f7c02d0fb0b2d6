"""The package's shape: the stage registry matches the code and notebooks, and imports flow one way."""
import ast
import inspect
from pathlib import Path

import pytest

from cqa_utils.registry import STAGES, get_stage, select

PACKAGE = Path(__file__).resolve().parents[1] / "cqa_utils"
BASE_MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "cli"))
STAGE_MODULES = sorted(p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__")


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Dotted cqa_utils modules a file imports, relative imports resolved (``root`` is cqa_utils/)."""
    package = ["cqa_utils"] + list(path.relative_to(root).parent.parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("cqa_utils")}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module.startswith("cqa_utils"):
                found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names}  # `from . import plots`
    return found


@pytest.mark.parametrize("name", BASE_MODULES)
def test_base_modules_import_neither_stages_nor_the_cli(name):
    bad = {m for m in imported_modules(PACKAGE / f"{name}.py")
           if m.startswith("cqa_utils.stages") or m.startswith("cqa_utils.cli")}
    assert not bad, f"cqa_utils/{name}.py imports {sorted(bad)}"


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_stages_import_no_other_stage_and_not_the_cli(name):
    imports = imported_modules(PACKAGE / "stages" / f"{name}.py")
    others = {m for m in imports if m.startswith("cqa_utils.stages.") and m.split(".")[2] != name}
    assert not others and not any(m.startswith("cqa_utils.cli") for m in imports), sorted(imports)


def test_the_import_reader_catches_every_form_of_a_forbidden_import(tmp_path):
    # the checker must see a violation, or the two tests above prove nothing
    stage = tmp_path / "stages" / "a.py"
    stage.parent.mkdir()
    stage.write_text("from .b import run_b\nfrom .. import cli\nimport cqa_utils.stages.c\nfrom ..runs import x\n")
    found = imported_modules(stage, root=tmp_path)
    assert {"cqa_utils.stages.b", "cqa_utils.cli", "cqa_utils.stages.c", "cqa_utils.runs"} <= found


def test_every_registered_stage_has_its_module_and_runner():
    assert sorted(spec.runner.partition(":")[0] for spec in STAGES) == STAGE_MODULES
    for spec in STAGES:
        runner = spec.load_runner()
        assert runner.__name__ == "run_" + spec.runner.partition(":")[0]
        assert list(inspect.signature(runner).parameters) == ["cfg", "force"]
        assert spec.folder.startswith(spec.key + "_") and spec.notebook.startswith(spec.key + "_")


def test_stages_are_found_by_key_or_folder_and_ranges_select_in_order():
    assert get_stage("03") == get_stage("03_logprobs")
    assert [s.key for s in select("02-04")] == ["02", "03", "04"] and [s.key for s in select(None)][0] == "00"
    with pytest.raises(ValueError, match="unknown stage '09'"):
        select("09")
    with pytest.raises(ValueError, match="unknown stage 'logprobs'"):
        get_stage("logprobs")

"""What ships beside the code: the citation file and the pins that pip and conda install."""
import copy
import json
import re
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

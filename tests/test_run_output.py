"""What a batch run shows its user: no warning that is not about the run, where to read the run and its
verdict at the end, and a README whose promised time comes from a measured run."""
import json
import logging
import shutil
import subprocess
import sys

import nbformat

from conftest import PROJECT_ROOT
from cqa_utils import pipeline
from cqa_utils.cli import run_summary
from cqa_utils.config import load_config
from cqa_utils.efficiency import study_time_markdown
from cqa_utils.registry import STAGES, StageSpec
from cqa_utils.report import STUDY_TIME_BEGIN, STUDY_TIME_END, controlled_verdict, headline_run

REFERENCE = PROJECT_ROOT / "reference"


def finished_run(tmp_path, stages=("04",)):
    """The published run `default` with only ``stages`` copied in (real files), and what `cqa run` returned."""
    cfg = load_config("default", {"run.results_dir": str(tmp_path)})
    for spec in STAGES:
        if spec.key in stages:
            shutil.copytree(REFERENCE / "default" / spec.folder, tmp_path / "default" / spec.folder)
    results = [pipeline.StageResult(spec.key, pipeline.NOTEBOOK_DIR / spec.notebook,
                                    tmp_path / "default" / "notebooks" / spec.notebook, 1.0) for spec in STAGES]
    return cfg, results


def test_cqa_run_ends_with_where_to_read_the_run_and_its_primary_verdict(tmp_path):
    cfg, results = finished_run(tmp_path)
    lines = run_summary(cfg, results).splitlines()
    stats = json.loads((REFERENCE / "default/04_stats/stats.json").read_text(encoding="utf-8"))
    assert lines == [
        "=== run default: 6 notebook(s) finished",
        f"  executed notebooks: {tmp_path}/default/notebooks/ (00_environment_check.ipynb … 05_figures.ipynb, "
        "with their outputs)",
        f"  HTML pages:         {tmp_path}/default/html/ (00_environment_check.html … 05_figures.html, "
        "for a browser)",
        f"  primary verdict:    {controlled_verdict(stats)}",
    ]
    assert lines[-1].startswith("  primary verdict:    The primary endpoint ")


def test_a_run_without_its_statistics_says_it_has_no_verdict_yet(tmp_path):
    cfg, results = finished_run(tmp_path, stages=())
    assert run_summary(cfg, results[:3]).splitlines()[-1] == (
        "  primary verdict:    none yet: stage 04 (statistics) has not finished in this run.")


def test_notebook_kernels_keep_their_unencrypted_tcp_warning_off_the_terminal(tmp_path, monkeypatch, capfd):
    """A real kernel, started the way run_notebook starts every stage's: its log shows errors only."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print('ran', file=sys.stderr)")])
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOK_DIR", tmp_path)
    spec = StageSpec("99", "99_tiny", "tiny.ipynb", "none:none")
    pipeline.run_notebook(spec, {}, tmp_path / "run")
    out, err = capfd.readouterr()
    assert "  [99] ran" in out and "=== [99] done in " in out
    assert "IPKernelApp" not in out + err and "without encryption" not in out + err
    assert (tmp_path / "run" / "html" / "tiny.html").is_file()


def test_the_kernels_log_level_would_still_show_an_error():
    code = ("from ipykernel.kernelapp import IPKernelApp; app = IPKernelApp(); "
            f"app.parse_command_line({list(pipeline.KERNEL_ARGUMENTS)!r}); "
            "app.log.warning('not shown'); app.log.error('shown')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "shown" in err and "not shown" not in err


def test_bitsandbytes_notice_about_a_kernel_no_run_uses_is_dropped_and_its_other_warnings_kept(caplog):
    import cqa_utils  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the message, as bitsandbytes 0.50 logs it
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
        logger.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]


WRAP_TWICE = """
import warnings
from peft import LoraConfig, get_peft_model  # imports bitsandbytes too, where installed
from transformers import LlamaConfig, LlamaForCausalLM

def wrapped():  # a tiny real Llama (shrunk: one layer of width 8) wrapped as stage 02 wraps the embedded model
    config = LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    return get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))

warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as before:
    wrapped()
import cqa_utils
with warnings.catch_warnings(record=True) as after:
    wrapped()
print([str(w.message)[:41] for w in before], [str(w.message)[:41] for w in after])
"""


def test_peft_wrapping_a_model_warns_about_transformers_deprecation_only_before_the_package_is_imported():
    done = subprocess.run([sys.executable, "-c", WRAP_TWICE], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['`is_gradient_checkpointing` is deprecated'] []", done.stdout
    assert done.stderr == ""


def test_the_readmes_time_for_make_reproduce_is_its_headline_runs_measured_time():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(STUDY_TIME_BEGIN, 1)[1].split(STUDY_TIME_END, 1)[0].strip()
    run = headline_run(readme)
    record = json.loads((REFERENCE / run / "efficiency.json").read_text(encoding="utf-8"))
    assert block == study_time_markdown(record)
    assert f"took {record['study']['wall_seconds'] / 60:.0f} min on {record['torch_threads']} CPU threads" in block
    assert "under an hour" not in readme

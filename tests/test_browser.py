"""The interactive path in a real browser: a notebook opened in JupyterLab, run from the Run menu, read back.

test_notebooks.py runs the notebooks headless with papermill; this runs them the way a reader does. JupyterLab is
started from the project's virtualenv on 127.0.0.1, and headless Debian Chromium drives it through Playwright (its
own browser download cannot work offline, so the system browser is launched). Each notebook is a copy of the
committed one with papermill's injected-parameters cell pointing it at the session's smoke run, so the browser sees
exactly what the pipeline runs (notebook 06, not a pipeline stage, reads the published controls grid). The window is
1280 pixels wide, a laptop's, and the checks read what is on screen there: the numbers a reader needs inside the
output area, not behind a scroll bar or an ellipsis. Needs ``/usr/bin/chromium`` (``.ci/run`` installs it) and
playwright (the dev extra); where either is missing the tests are skipped with the command that installs it.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from conftest import PROJECT_ROOT
from cqa_utils.pipeline import NOTEBOOK_DIR

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium chromium-driver fonts-dejavu-core"
if not CHROMIUM.is_file():  # checked before any fixture, so a skip never waits for the smoke run
    pytest.skip(f"no {CHROMIUM}: install it with `{CHROMIUM_INSTALL}`", allow_module_level=True)
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="no playwright: install it with `pip install playwright==1.65.2` (`make setup` "
                                  "does: it is in the dev extra)")

pytestmark = pytest.mark.slow

KERNEL_DISPLAY_NAME = "Python (cqa-companion)"  # what `make setup` registers and the notebooks name
LAB_SETTINGS = {  # every cell attached to the DOM (no windowing), and no news or update requests
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}
STARTUP_TIMEOUT_S = 120  # JupyterLab and a kernel start in ~5 s each on 2 idle cores; CI's cores are busy
RUN_ALL_TIMEOUT_S = 300  # notebooks 04 and 05 on a finished smoke run, and 06 on the published grid: under a minute
PROMPTS = ".jp-Notebook .jp-CodeCell .jp-InputPrompt"  # "[ ]:" not run, "[*]:" queued or running, "[3]:" ran
WINDOW = {"width": 1280, "height": 900}  # a laptop's browser window: what a reader has on screen
GRID = "controls"  # the published grid notebook 06 reads (reference/sweeps/controls.json)


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path  # the folder JupyterLab serves

    def tree_url(self, notebook: Path) -> str:
        """The notebook alone in a workspace of its own: no tab (and kernel) of an earlier test is restored."""
        path = notebook.relative_to(self.root).as_posix()
        return f"{self.url}/lab/workspaces/{notebook.stem}/tree/{path}?reset&token={self.token}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_status(server: subprocess.Popen, lab: Lab, log: Path) -> None:
    """Poll ``/api/status`` until the server answers; fail with its log if it exits or never answers."""
    request = urllib.request.Request(f"{lab.url}/api/status", headers={"Authorization": f"token {lab.token}"})
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer /api/status within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; its process group (server + kernels) is then killed if not."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab from this virtualenv serving a temporary folder, with its own settings; stopped by PID."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    root.mkdir()
    for name, values in LAB_SETTINGS.items():
        path = home / "settings" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    lab = Lab(f"http://127.0.0.1:{free_port()}", secrets.token_hex(16), root)
    log = home / "server.log"
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--ServerApp.token={lab.token}",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={lab.url.rpartition(':')[2]}",
               "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}"]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_status(server, lab, log)
        yield lab
    finally:
        stop(server)


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium under Playwright; closed (with Playwright's driver) however the tests end."""
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def parameterized_copy(name: str, run: Path | None, into: Path, parameters: dict | None = None) -> Path:
    """``notebooks/<name>`` with papermill's injected-parameters cell for ``run`` (or ``parameters``), as the
    pipeline would run it."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    if parameters is None:
        parameters = {"config": "smoke", "run_name": run.name, "force": False,
                      "overrides": {"run.results_dir": str(run.parent)}}
    notebook = parameterize_notebook(load_notebook_node(str(NOTEBOOK_DIR / name)), parameters)
    nbformat.write(notebook, into / name)
    return into / name


def run_all_cells(page, lab: Lab, notebook: Path):
    """Open ``notebook`` in JupyterLab, check it is on the project's kernel, Run → Run All Cells, wait until the
    kernel has finished, fail on a traceback or a cell that did not run; return the output areas (a Locator)."""
    page.goto(lab.tree_url(notebook))
    # The indicator reads idle before any kernel exists, and Run All then asks for one: wait for the kernel first.
    playwright_api.expect(page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")).to_have_text(
        KERNEL_DISPLAY_NAME, timeout=STARTUP_TIMEOUT_S * 1000)
    playwright_api.expect(page.locator(".jp-Notebook-ExecutionIndicator")).to_have_attribute(
        "data-status", "idle", timeout=STARTUP_TIMEOUT_S * 1000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    # Run All marks every cell [*] at once; done when none is left so and the first has its number.
    prompts = page.locator(PROMPTS)
    try:
        page.wait_for_function(r"""selector => {
            const prompts = [...document.querySelectorAll(selector)].map(p => p.textContent.trim());
            return prompts.length > 0 && /^\[\d+\]:$/.test(prompts[0]) && !prompts.some(p => p.includes('*'));
        }""", arg=PROMPTS, timeout=RUN_ALL_TIMEOUT_S * 1000)
    except playwright_api.TimeoutError:
        pytest.fail(f"{notebook.name} still running after {RUN_ALL_TIMEOUT_S} s: {prompts.all_inner_texts()}")
    tracebacks = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").filter(
        has_text="Traceback")
    if tracebacks.count():
        pytest.fail(f"{notebook.name} raised in JupyterLab:\n{tracebacks.first.inner_text()[-3000:]}")
    texts = prompts.all_inner_texts()
    not_run = [i for i, prompt in enumerate(texts) if not re.fullmatch(r"\[\d+\]:", prompt.strip())]
    assert not not_run, f"{notebook.name}: code cells {not_run} (0-based) did not run: {texts}"
    return page.locator(".jp-OutputArea-output")


@contextlib.contextmanager
def notebook_page(browser, lab: Lab, notebook: Path):
    """A page at the test window's size with every cell of ``notebook`` run (:func:`run_all_cells`):
    yields (page, output areas); the page is closed afterwards."""
    page = browser.new_page(viewport=WINDOW)
    try:
        yield page, run_all_cells(page, lab, notebook)
    finally:
        page.close()


def assert_on_screen(page, element, what: str) -> None:
    """``element`` is drawn inside its output area and the window, not past the area's right edge (where a wide
    table is cut and scrolls) nor past the window's."""
    playwright_api.expect(element).to_be_visible()
    box = element.bounding_box()
    area = element.locator("xpath=ancestor::div[contains(@class, 'jp-OutputArea-output')][1]").bounding_box()
    right = min(area["x"] + area["width"], page.viewport_size["width"])
    assert box["x"] >= area["x"] and box["x"] + box["width"] <= right + 1, (
        f"{what} spans x = {box['x']:.0f}–{box['x'] + box['width']:.0f} px; the output area ends at "
        f"{area['x'] + area['width']:.0f} px and the window at {page.viewport_size['width']} px")


def test_notebook_04_shows_the_primary_endpoints_p_and_d_z_and_its_verdict(smoke_run, lab, browser):
    _, run, _ = smoke_run
    notebook = parameterized_copy("04_delta_i_statistics.ipynb", run, lab.root)
    with notebook_page(browser, lab, notebook) as (page, outputs):
        playwright_api.expect(outputs.filter(has_text="The primary endpoint").first).to_be_visible()  # its verdict
        primary = page.locator(".jp-CodeCell").filter(has_text="controlled_verdict(report)")  # section 2's cell
        table = primary.locator(".jp-OutputArea-output table.cqa-key-view")
        playwright_api.expect(table).to_have_count(1)
        header = [h.strip() for h in table.locator("thead th").all_inner_texts()]
        row = table.locator("tbody tr").first
        for column in ("p_one_sided", "d_z"):
            assert column in header, f"the primary row shows only {header}"
            cell = row.locator("td").nth(header.index(column))
            assert re.fullmatch(r"[+-]?\d[\d.e+-]*", cell.inner_text().strip()), f"{column} reads {cell.inner_text()!r}"
            assert_on_screen(page, cell, f"the primary row's {column}")


def test_notebook_05_shows_each_figure_once(smoke_run, lab, browser):
    _, run, _ = smoke_run
    notebook = parameterized_copy("05_figures.ipynb", run, lab.root)
    with notebook_page(browser, lab, notebook) as (page, _):
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        images = [cells.nth(i).locator(".jp-OutputArea-output img").count() for i in range(cells.count())]
        assert max(images) == 1, f"images per code cell: {images} (a figure drawn twice)"
        assert sum(images) >= 10, f"images per code cell: {images}; figures (a)–(j) expected"  # (k): other models


def test_notebook_06_shows_the_mixed_models_warnings_as_text(lab, browser, tmp_path):
    """Every warning the mixed model saved in its ``note`` column is visible under the table, in the window."""
    import pandas as pd

    out = tmp_path / "06_robustness"
    notebook = parameterized_copy("06_robustness.ipynb", None, lab.root, {
        "grid": GRID, "results_dir": str(tmp_path / "results"), "reference_dir": str(PROJECT_ROOT / "reference"),
        "out_dir": str(out)})  # no sweep.json under results_dir: the published grid is read
    with notebook_page(browser, lab, notebook) as (page, outputs):
        notes = pd.read_csv(out / "mixed_model.csv")["note"].dropna().str.strip().unique()
        assert len(notes) and all(notes), f"the published {GRID} grid's mixed model has no warning to show: {notes}"
        for note in notes:
            shown = outputs.locator(".cqa-note").filter(has_text=note).first
            assert_on_screen(page, shown, f"the warning {note[:40]!r}…")


def test_notebook_03s_explorer_is_a_live_widget_in_jupyterlab(smoke_run, lab, browser):
    """The explorer renders as ipywidgets (not the batch run's static figure) and redraws on a new choice."""
    _, run, _ = smoke_run
    notebook = parameterized_copy("03_logprob_extraction.ipynb", run, lab.root)
    with notebook_page(browser, lab, notebook) as (page, _):
        item = page.locator(".widget-dropdown select").first
        playwright_api.expect(item).to_be_visible(timeout=60_000)
        labels = page.locator(".widget-toggle-buttons button, .widget-label")
        cut = [b.inner_text() for b in labels.all() if b.evaluate("b => b.scrollWidth > b.clientWidth + 1")]
        assert not cut, f"the explorer's labels cut short at {WINDOW['width']} px: {cut}"
        view = page.locator(".widget-output").last
        playwright_api.expect(view).to_contain_text("ΔI = log P(x|y) − log P(x)", timeout=60_000)
        before = view.inner_text()
        options = item.locator("option").all_inner_texts()
        assert len(options) > 1, f"the item dropdown offers {options}"
        chosen = next(o for o in options if o.split()[0] not in before)  # split(): labels may hold a no-break space
        item.select_option(label=chosen)
        playwright_api.expect(view).to_contain_text(chosen.split()[0], timeout=60_000)
        # the sentence is printed before the figure is displayed: wait for the figure too
        playwright_api.expect(view.locator("img").first).to_be_visible(timeout=60_000)

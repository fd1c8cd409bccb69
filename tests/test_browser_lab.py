"""A person's first session, in a real JupyterLab driven through Debian's chromium: `kdnb notebook`
starts Lab, the `.py` notebook 02 opens as a notebook (not as text), runs to its end on the
bundled sample, `d.show()` draws the viewer; picking a task titles the stack panel with its pid;
the Backtraces tab shows hex addresses and no `<NA>`; the log text is visible. Screenshots go to
tests/artifacts/. Skipped when chromium, chromedriver, selenium or JupyterLab are absent."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO
from .test_ui import sample_dumps

pytestmark = pytest.mark.browser
ARTIFACTS = REPO / "tests" / "artifacts"
DECIMAL_KERNEL_ADDRESS = re.compile(r"(?<![0-9a-fx.])18446\d{15}(?!\d)")
TOKEN = "kdnb-browser-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver():
    webdriver = pytest.importorskip("selenium.webdriver")
    browser, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver_bin:
        pytest.skip("Debian chromium / chromium-driver not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--no-first-run", "--disable-background-networking",
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        opts.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(driver_bin), options=opts)
    except Exception as exc:  # noqa: BLE001 - a broken browser install is a skip, not a failure
        pytest.skip(f"chromium would not start: {exc}")


def _wait(drv, script: str, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = drv.execute_script(script)
        if value:
            return value
        time.sleep(0.3)
    _shot(drv, f"lab-timeout-{what}")
    raise AssertionError(f"timed out waiting for {what}")


def _shot(drv, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("jupyterlab")
    pytest.importorskip("jupytext")
    if not sample_dumps():
        pytest.skip("no bundled sample")
    work = tmp_path_factory.mktemp("lab")
    port = _free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"), JUPYTER_RUNTIME_DIR=str(work / "rt"))
    log = open(work / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdnb.cli", "notebook", str(work / "ws"), "--port", str(port),
         "--no-browser"] + [f"--lab-option={o}" for o in (
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.ip=127.0.0.1",
             "--LabApp.expose_app_in_browser=True", "--ServerApp.port_retries=0")]
        + (["--lab-option=--allow-root"] if os.geteuid() == 0 else []),
        cwd=str(work), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.time() + 40
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > end:
                    pytest.fail("JupyterLab did not start: " + (work / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield url, work / "ws"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run_all(drv) -> None:
    """Run every cell once the kernel is up (accepting a kernel dialog if Lab shows one)."""
    _wait(drv, """
        const b = document.querySelector('.jp-Dialog .jp-mod-accept'); if (b) { b.click(); return false; }
        const w = window.jupyterapp.shell.currentWidget;
        const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
        return k && k.status === 'idle';""", 40, "the kernel")
    drv.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # the model, not the DOM (Lab renders only the visible cells): every code cell with code
    # has an execution count and the kernel is idle again
    _wait(drv, """
        const b = document.querySelector('.jp-Dialog .jp-mod-accept'); if (b) b.click();
        const w = window.jupyterapp.shell.currentWidget;
        const cells = Array.from(w.content.model.cells).filter(
            c => c.type === 'code' && c.sharedModel.getSource().trim() !== '');
        const k = w.sessionContext.session && w.sessionContext.session.kernel;
        return cells.length > 0 && k && k.status === 'idle' &&
               cells.every(c => c.executionCount !== null && c.executionCount > 0);""", 70,
          "notebook 02 to run")


def _click_tab(drv, title: str) -> None:
    """A real mouse click on a viewer tab (Lumino tab bars listen to pointer events)."""
    tab = drv.find_element("xpath", f"//div[contains(@class,'lm-TabBar-tabLabel') and "
                                    f"normalize-space(text())='{title}']")
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'})", tab)
    tab.click()
    time.sleep(1)


def test_notebook_02_and_the_viewer_in_jupyterlab(lab):
    url, ws = lab
    assert (ws / "04-report.py").read_text() == (REPO / "kdnb/ui/templates/report.py").read_text()
    assert not os.stat(ws / "04-report.py").st_mode & 0o222, "the report copy must be read-only"
    drv = _driver()
    try:
        drv.get(f"{url}/lab/tree/02-panic-root-cause.py?token={TOKEN}")
        _wait(drv, "return window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
              40, "the .py file to open as a notebook")
        assert not drv.execute_script("return document.querySelector('.jp-FileEditor')"), \
            "02-panic-root-cause.py opened in the text editor"
        _run_all(drv)
        _shot(drv, "lab-notebook02")
        # the viewer drawn by the last cell
        _wait(drv, "return document.querySelector('.widget-tab, .jupyter-widget-tab')", 30, "d.show()")
        drv.execute_script("document.querySelector('.widget-tab, .jupyter-widget-tab').scrollIntoView()")
        assert not drv.execute_script(
            "return Array.from(document.querySelectorAll('.widget-progress')).filter(p => p.offsetParent).length"), \
            "the progress bar is still shown"
        _click_tab(drv, "Tasks")
        row_pid = _wait(drv, """
            const rows = Array.from(document.querySelectorAll('.widget-tab table.dataTable tbody tr, .jupyter-widget-tab table.dataTable tbody tr'))
              .filter(r => r.offsetParent && r.cells.length > 3);
            if (!rows.length) return null;
            const r = rows[Math.min(2, rows.length - 1)];
            r.scrollIntoView({block: 'center'});
            return r.cells[0].innerText.trim();""", 30, "the tasks table")
        row = drv.execute_script("""
            return Array.from(document.querySelectorAll('.widget-tab table.dataTable tbody tr, .jupyter-widget-tab table.dataTable tbody tr'))
              .filter(r => r.offsetParent && r.cells.length > 3)
              .find(r => r.cells[0].innerText.trim() === arguments[0]);""", row_pid)
        row.find_elements("tag name", "td")[1].click()  # a real click selects the row
        title = _wait(drv, f"""
            const t = Array.from(document.querySelectorAll('b')).map(b => b.innerText)
              .find(x => x.startsWith('Stack of pid {row_pid} '));
            return t || null;""", 20, "the stack panel title")
        assert f"pid {row_pid} · " in title and "state" in title
        _shot(drv, "lab-viewer-tasks")
        _click_tab(drv, "Backtraces")
        text = drv.execute_script("return document.querySelector('.widget-tab, .jupyter-widget-tab').innerText")
        assert "0xffffffff" in text and "<NA>" not in text
        assert not DECIMAL_KERNEL_ADDRESS.search(text), DECIMAL_KERNEL_ADDRESS.search(text)
        _shot(drv, "lab-viewer-backtraces")
        _click_tab(drv, "Log")
        log_text = drv.execute_script("""
            return Array.from(document.querySelectorAll('.widget-tab td, .jupyter-widget-tab td'))
              .filter(td => td.offsetParent && td.innerText.startsWith('Linux version')).length""")
        assert log_text >= 1, "the log text is not visible"
        _shot(drv, "lab-viewer-log")
    finally:
        drv.quit()
    # saving in Lab wrote only the workspace: the packaged template is what git has
    assert not subprocess.run(["git", "diff", "--quiet", "--", "kdnb/ui/templates/report.py"],
                              cwd=REPO).returncode

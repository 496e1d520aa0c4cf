"""A real report opened in real headless Chromium: the browser's DOM holds the verdict and its
guarantee, and its screenshot is a picture (not one colour). Skipped where no Chromium or Chrome
is installed (`.ci/run` installs Debian's `chromium`); a browser that hangs fails the test."""
from __future__ import annotations

import html
import json
import os
import shutil
import signal
import subprocess

import pytest
from PIL import Image

from smtverify.cli import main
from smtverify.verdict import SAFE_GUARANTEE, UNSAFE_GUARANTEE

BROWSER = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(name)), None)
BROWSER_SECONDS = 120      # far above the 1-3 s a render takes; a hung browser fails instead of hanging

pytestmark = pytest.mark.skipif(BROWSER is None, reason="no chromium, chromium-browser or google-chrome on PATH")


def headless(profile, *arguments: str) -> str:
    """Run the browser headless (its own profile folder, no sandbox: CI runs as root); its stdout.
    On a timeout its whole process group is killed, so no renderer is left behind."""
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=BROWSER_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{BROWSER} did not finish within {BROWSER_SECONDS} s: {' '.join(arguments)}")
    assert process.returncode == 0, err[-2000:]
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A batch's report: 10 digits at eps 0.05, most verified, one falsified."""
    folder = tmp_path_factory.mktemp("browser") / "run"
    assert main(["batch", "digits_mlp", "--eps", "0.05", "--limit", "10", "--item-timeout", "10", "--out",
                 str(folder), "--quiet"]) == 0
    return folder / "report.html"


def test_chromium_renders_the_verdict_and_its_guarantee(report, tmp_path):
    dom = html.unescape(headless(tmp_path / "profile", "--dump-dom", report.as_uri()))
    (row,) = json.loads((report.parent / "summary.json").read_text())["per_eps"]
    assert f"verified accuracy {100 * row['verified_accuracy']:.2f}%" in dom and "Robustness" in dom
    assert SAFE_GUARANTEE in dom and UNSAFE_GUARANTEE in dom
    items = [json.loads(line) for line in (report.parent / "journal.jsonl").read_text().splitlines()]
    for item in items:          # each counterexample's caption
        if item.get("outcome") == "falsified":
            assert f"class {item['label']} \u2192 {item['counterexample_class']}" in dom


def test_chromium_screenshots_the_report_as_a_picture(report, tmp_path):
    shot = tmp_path / "report.png"
    headless(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50         # text, tables, the banner: far from one colour
    assert all(low < high for low, high in image.getextrema())

"""Progress at a terminal: `certify` and `vnnlib` draw it on stderr under a pseudo-terminal, and
not at all when stderr is a pipe or --quiet is given; stdout is the same either way."""
from __future__ import annotations

import os
import pty
import subprocess
import sys

import numpy as np
import pytest

from smtverify import resources
from tests.conftest import SHARED, needs_shared

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


def _certify_command(tmp_path, *extra: str) -> list[str]:
    images = resources.test_images("mnist_cnn")
    np.save(tmp_path / "digit.npy", images.images[0])
    return [sys.executable, "-m", "smtverify.cli", "certify", str(resources.model_path("mnist_cnn")),
            "--input", str(tmp_path / "digit.npy"), "--label", str(int(images.labels[0])), "--eps", "0.02",
            "--timeout", "60", *extra]


def _run_with_terminal_stderr(command: list[str]) -> tuple[str, str]:
    """stdout through a pipe, stderr into a pseudo-terminal: (stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:          # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    stdout = process.stdout.read()
    process.wait(timeout=120)
    os.close(controller)
    return stdout, shown.decode(errors="replace")


def test_certify_shows_progress_at_a_terminal_and_keeps_stdout_clean(tmp_path):
    stdout, shown = _run_with_terminal_stderr(_certify_command(tmp_path))
    assert stdout.startswith("SAFE") and "certifying" not in stdout
    assert "certifying" in shown and "root bounds" in shown


def test_no_progress_when_piped_or_quiet(tmp_path):
    piped = subprocess.run(_certify_command(tmp_path), capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("SAFE") and "certifying" not in piped.stderr
    stdout, shown = _run_with_terminal_stderr(_certify_command(tmp_path, "--quiet"))
    assert stdout.startswith("SAFE") and "certifying" not in shown


@needs_shared
def test_bench_shows_instances_and_verdict_counts_at_a_terminal(tmp_path):
    smoke = SHARED / "smoke" / "instances.csv"
    command = [sys.executable, "-m", "smtverify.cli", "bench", str(smoke), "--out", str(tmp_path / "run")]
    stdout, shown = _run_with_terminal_stderr(command)
    assert stdout.startswith("solved 5/5") and "[5/5]" in shown and "bench" in shown and "unsat" in shown
    quiet = subprocess.run(command + ["--quiet", "--force"], capture_output=True, text=True, timeout=120)
    assert quiet.stdout.startswith("solved 5/5") and quiet.stderr == ""

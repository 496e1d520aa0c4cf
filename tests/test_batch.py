"""smtverify batch: verified accuracy over a dataset, per eps and class, journalled as it goes;
interrupted, it keeps what it did and --resume finishes without repeating it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np

from smtverify import resources
from smtverify.batch import BatchRun, Certifier
from smtverify.cli import main
from smtverify.onnx_import import load_onnx
from smtverify.reference import OnnxRuntimeExecutor
from smtverify.run_folder import RunFolder


def _journal(folder) -> list[dict]:
    """The run's items, as journalled."""
    return [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "item"]


def test_a_sweep_counts_every_image_once_per_eps_and_agrees_with_its_items(tmp_path, capsys):
    """Clean accuracy from onnxruntime; each eps's outcomes add up to the images; a falsified
    item's counterexample class differs from its label; a larger eps never verifies more."""
    assert main(["batch", "digits_mlp", "--eps-sweep", "0.01,0.05", "--limit", "25", "--out", str(tmp_path / "run"),
                 "--item-timeout", "10", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    images = resources.test_images("digits_mlp")
    x, y = images.images[:25], images.labels[:25]
    truth = np.argmax(OnnxRuntimeExecutor(load_onnx(resources.model_path("digits_mlp"))).logits(x), axis=1)
    assert record["clean_accuracy"] == float(np.mean(truth == y))
    small, large = record["per_eps"]
    for row in (small, large):
        assert sum(row[o] for o in ("verified", "falsified", "unknown", "misclassified")) == 25
        assert row["misclassified"] == int(np.sum(truth != y))
        assert row["verified_accuracy"] == row["verified"] / 25
    assert large["verified"] <= small["verified"] and large["falsified"] > 0
    items = _journal(tmp_path / "run")
    assert len(items) == 50 and len({(i["eps"], i["index"]) for i in items}) == 50
    assert all(i["counterexample_class"] != i["label"] for i in items if i["outcome"] == "falsified")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["per_eps"] == record["per_eps"]


def test_a_used_run_folder_is_refused_without_resume_or_force(tmp_path, capsys):
    run = ["batch", "digits_mlp", "--eps", "0.01", "--limit", "3", "--out", str(tmp_path / "run")]
    assert main(run) == 0
    assert main(run) == 2 and "--resume" in capsys.readouterr().err
    assert main(run + ["--force"]) == 0 and len(_journal(tmp_path / "run")) == 3
    assert main(run + ["--resume"]) == 0 and len(_journal(tmp_path / "run")) == 3     # nothing left to do


def test_an_interrupted_batch_keeps_its_journal_and_resume_finishes_without_repeating(tmp_path):
    folder = tmp_path / "run"
    command = [sys.executable, "-m", "smtverify.cli", "batch", "digits_mlp", "--eps-sweep", "0.01,0.02,0.03,0.05",
               "--limit", "15", "--out", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = folder / "journal.jsonl"
    while process.poll() is None and (not journal.exists() or len(journal.read_text().splitlines()) < 5):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    before = _journal(folder)
    assert 5 <= len(before) < 60 and "--resume" in stderr and "items done" in stderr
    assert json.loads((folder / "summary.json").read_text())["items"] == len(before)
    done = subprocess.run(command + ["--resume", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    after = _journal(folder)
    assert after[:len(before)] == before and len(after) == 60
    assert len({(i["eps"], i["index"]) for i in after}) == 60
    assert json.loads(done.stdout)["items"] == 60


def test_sigterm_ends_a_batch_like_ctrl_c(tmp_path):
    folder = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "smtverify.cli", "batch", "digits_mlp", "--eps", "0.02",
                                "--out", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = folder / "journal.jsonl"
    while process.poll() is None and (not journal.exists() or not journal.read_text()):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "items done" in stderr and len(_journal(folder)) >= 1


def test_a_resumed_run_counts_its_journal(tmp_path):
    """The library: a run over a journal holding some items certifies only the others."""
    network = load_onnx(resources.model_path("digits_mlp"))
    images = resources.test_images("digits_mlp")
    x, y = images.images[:6], images.labels[:6]
    folder = RunFolder(tmp_path)
    first = BatchRun(network, x, y, [0.01], Certifier(network, (0.0, 1.0)), 10.0, folder)
    assert len(list(first.items(time.perf_counter() + 60))) == 6
    again = BatchRun(network, x, y, [0.01, 0.02], Certifier(network, (0.0, 1.0)), 10.0, folder)
    assert len(again.finished) == 6 and again.summary.items == 6
    new = list(again.items(time.perf_counter() + 60))
    assert [(i.eps, i.index) for i in new] == [(0.02, k) for k in range(6)]

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
from smtverify.inputs import read_image_folder
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
    images = resources.classes_interleaved(resources.test_images("digits_mlp"))     # as batch takes them
    x, y = images.images[:25], images.labels[:25]
    assert len(set(y.tolist())) == 10
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


def test_search_mode_counts_grid_safe_images_and_saves_each_confirmed_example(tmp_path, capsys):
    """--span: DLV's grid search per image. A falsified item's saved example is misclassified by
    onnxruntime and lies on the grid (every moved pixel by a multiple of the span)."""
    folder = tmp_path / "run"
    assert main(["batch", "digits_mlp", "--span", "0.3", "--steps", "2", "--features", "6", "--limit", "12",
                 "--out", str(folder), "--item-timeout", "10", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    row = record["per_eps"][0]
    assert record["mode"] == "search" and record["size"] == "span" and row["eps"] == 0.3
    assert sum(row[o] for o in ("verified", "falsified", "unknown", "misclassified")) == 12
    falsified = [i for i in _journal(folder) if i["outcome"] == "falsified"]
    assert falsified and all(i["verdict"] == "UNSAFE" for i in falsified)
    assert all(i["verdict"] == "SAFE_ON_GRID" for i in _journal(folder) if i["outcome"] == "verified")
    executor = OnnxRuntimeExecutor(load_onnx(resources.model_path("digits_mlp")))
    for item in falsified:
        with np.load(folder / item["example_file"]) as saved:
            x, original = saved["input"], saved["original"]
            assert executor.classify(x[None])[0] == item["counterexample_class"] != item["label"]
            moved = (x - original).reshape(-1)
            steps = moved[moved != 0] / np.float32(0.3)
            assert np.allclose(steps, np.round(steps), atol=1e-5) or np.any(np.isin(x, (0.0, 1.0)))
    assert json.loads((folder / "run.json").read_text())["search"]["steps"] == 2


def test_a_folder_of_pngs_is_read_with_its_labels_in_each_of_three_ways(tmp_path, capsys):
    """labels.csv, a subfolder per class and LABEL_ names give the same images and labels, and a
    batch over the folder sees the accuracy onnxruntime gives on those images."""
    from smtverify.png import save_png

    images = resources.test_images("mnist_cnn")
    x, y = images.images[:6], images.labels[:6]
    named, by_class, listed = tmp_path / "named", tmp_path / "by_class", tmp_path / "listed"
    for folder in (named, by_class, listed):
        folder.mkdir()
    rows = []
    for i, (image, label) in enumerate(zip(x, y)):
        save_png(image, named / f"{label}_{i:03d}.png")
        (by_class / str(label)).mkdir(exist_ok=True)
        save_png(image, by_class / str(label) / f"img{i:03d}.png")
        save_png(image, listed / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{label}")
    (listed / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    network = load_onnx(resources.model_path("mnist_cnn"))
    for folder in (named, listed):
        inputs, labels = read_image_folder(folder, network)
        assert np.array_equal(inputs, x) and labels.tolist() == y.tolist()     # 8-bit images: exact
    inputs, labels = read_image_folder(by_class, network)
    assert sorted(labels.tolist()) == sorted(y.tolist()) and len(inputs) == 6
    assert main(["batch", "mnist_cnn", "--images", str(named), "--eps", "0", "--out", str(tmp_path / "run"),
                 "--json"]) == 0
    truth = OnnxRuntimeExecutor(network).classify(x)
    assert json.loads(capsys.readouterr().out)["clean_accuracy"] == float(np.mean(truth == y))
    (named / "unlabelled.png").write_bytes((named / f"{y[0]}_000.png").read_bytes())
    assert main(["batch", "mnist_cnn", "--images", str(named), "--eps", "0.001", "--out", str(tmp_path / "r2")]) == 2
    assert "unlabelled.png" in capsys.readouterr().err

"""A search's folder holds its own run: a previous run's examples are refused or cleared, and
retrain.npz always holds exactly the examples on disk."""
from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from smtverify import resources
from smtverify.cli import main
from smtverify.export import ExampleWriter, example_files
from smtverify.onnx_import import load_onnx
from smtverify.run_folder import RunFolder
from smtverify.search import SearchSettings, dlv_search
from smtverify.search_memory import SearchMemory


def _search(tmp_path, *extra: str) -> list[str]:
    images = resources.test_images("mnist_cnn")
    np.save(tmp_path / "digit.npy", images.images[0])
    return ["search", "mnist_cnn", "--input", str(tmp_path / "digit.npy"), "--label", str(int(images.labels[0])),
            "--span", "0.25", "--steps", "2", "--features", "8", "--rounds", "4", "--heuristic", "gradient",
            "--all", "--max-files", "5", "--out", str(tmp_path / "out"), *extra]


def test_a_folder_with_a_previous_runs_examples_is_refused_unless_forced(tmp_path, capsys):
    assert main(_search(tmp_path)) == 0
    first = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "example_0000.npz" in first
    (tmp_path / "out" / "example_0999.npz").write_bytes((tmp_path / "out" / "example_0000.npz").read_bytes())
    assert main(_search(tmp_path)) == 2 and "--force" in capsys.readouterr().err
    assert main(_search(tmp_path, "--force")) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == first      # the stale one is gone
    with np.load(tmp_path / "out" / "retrain.npz") as retrain:
        assert len(retrain["labels"]) == sum(name.endswith(".npz") and name.startswith("example_") for name in first)


def test_retrain_holds_the_examples_on_disk_even_if_one_was_not_counted(tmp_path):
    """An interrupt between saving an example and counting it: retrain.npz is read from the files."""
    images = resources.test_images("digits_mlp")
    x = images.images[0]
    writer = ExampleWriter(tmp_path, x)
    np.savez(tmp_path / "example_0000.npz", input=x, original_class=np.int64(3))   # written, never counted
    writer.close()
    with np.load(tmp_path / "retrain.npz") as retrain:
        assert retrain["inputs"].shape == (1,) + x.shape and retrain["labels"].tolist() == [3]


# ----- resuming a search ------------------------------------------------------------------------
def _all_examples(tmp_path, out: str, *extra: str) -> list[str]:
    """DLV's rounds to the round whose grid holds hundreds of examples, all collected: long enough
    to interrupt in that round, after two rounds of safe grids."""
    images = resources.test_images("mnist_cnn")
    np.save(tmp_path / "digit.npy", images.images[0])
    return [sys.executable, "-m", "smtverify.cli", "search", "mnist_cnn", "--input", str(tmp_path / "digit.npy"),
            "--label", str(int(images.labels[0])), "--span", "0.25", "--steps", "2", "--features", "8",
            "--heuristic", "gradient", "--rounds", "4", "--all", "--out", str(tmp_path / out), *extra]


def _inputs(folder) -> list[np.ndarray]:
    return [np.load(path)["input"] for path in example_files(folder)]


def _journal(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines()]


def test_an_interrupted_search_resumes_where_it_stopped_and_ends_as_one_uninterrupted_run(tmp_path):
    """SIGINT in round 3, after examples were written: exit 130 with a summary; --resume takes rounds
    1 and 2 from the journal, goes on in round 3 from its last checkpoint (the points before it are
    not evaluated again), and the folder ends holding exactly the examples, in the same order, of a
    run that was never interrupted."""
    whole = subprocess.run(_all_examples(tmp_path, "whole", "--json"), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)
    assert len(expected["rounds"]) == 3 and expected["examples_found"] > 100
    command = _all_examples(tmp_path, "cut")
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = tmp_path / "cut" / "journal.jsonl"
    while child.poll() is None and not (journal.exists() and '"checkpoint", "key": "3:' in journal.read_text()
                                        and journal.read_text().count('"example"') >= 20):
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and "--resume" in err and "Traceback" not in err
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["complete"] is False
    kept = _journal(tmp_path / "cut")
    resumed = subprocess.run(command + ["--resume", "--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    record = json.loads(resumed.stdout)
    skipped = [r for r in kept if r["kind"] == "checkpoint" and r["key"].startswith("3:")][-1]["evaluated"]
    done_before = sum(r["evaluated"] for r in kept if r["kind"] == "grid")
    assert record["earlier_points"] == done_before + skipped > done_before
    for key in ("verdict", "points_evaluated", "examples_found"):
        assert record[key] == expected[key], key
    assert [g["dims"] for g in record["grids"]] == [g["dims"] for g in expected["grids"]]
    want, got = _inputs(tmp_path / "whole"), _inputs(tmp_path / "cut")
    assert len(got) == len(want) == expected["examples_written"]
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    with np.load(tmp_path / "cut" / "retrain.npz") as retrain:
        assert len(retrain["inputs"]) == len(want)


def test_a_resumed_multi_round_search_replays_finished_grids(tmp_path):
    """The library: a search cut short by its point budget in round 2, then resumed from its journal,
    reports what one uninterrupted search reports; round 1's grid is taken from the journal."""
    network = load_onnx(resources.model_path("digits_mlp"))
    images = resources.test_images("digits_mlp")
    x, label = images.images[4], int(images.labels[4])
    settings = SearchSettings(span=0.2, steps=2, features=4, rounds=5, heuristic="gradient", timeout=None)
    whole = dlv_search(network, x, label, settings)
    assert len(whole.grids) >= 3 and whole.grids[1].safe
    budget = whole.grids[0].points_evaluated + whole.grids[1].points_evaluated // 2
    folder = RunFolder(tmp_path)
    first = dlv_search(network, x, label, dataclasses.replace(settings, max_points=budget),
                       memory=SearchMemory(folder.journal, [], every=0.0))
    assert first.points_evaluated == budget and first.verdict.value == "UNKNOWN"
    again = dlv_search(network, x, label, settings, memory=SearchMemory(folder.journal, [], every=0.0))
    assert again.verdict == whole.verdict and again.points_evaluated == whole.points_evaluated
    assert [g.dims for g in again.grids] == [g.dims for g in whole.grids]
    assert again.earlier_points == budget and again.grids[0].search_seconds == 0.0
    assert [f.example.input.tobytes() for f in again.examples] == [f.example.input.tobytes() for f in whole.examples]


def test_resuming_with_other_options_is_refused_naming_what_differs(tmp_path, capsys):
    assert main(_search(tmp_path)) == 0
    assert main(_search(tmp_path, "--resume")) == 0          # the same search: nothing left to do
    changed = [a if a != "0.25" else "0.3" for a in _search(tmp_path, "--resume")]
    assert main(changed) == 2 and "settings" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:                       # one or the other
        main(_search(tmp_path, "--resume", "--force"))
    assert ended.value.code == 2

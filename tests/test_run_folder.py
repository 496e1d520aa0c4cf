"""Run folders: a forced run never mixes with another run's files, a folder that is not a run's is
never cleared, a resumed run must be the same run (the first difference named), and output paths
that cannot be written are named errors (exit 2), leaving no partial file."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from smtverify import resources
from smtverify.atomic import write_whole
from smtverify.cli import main
from smtverify.errors import SmtVerifyError
from smtverify.run_folder import RunFolder


def _digit(tmp_path) -> tuple[str, str]:
    images = resources.test_images("digits_mlp")
    np.save(tmp_path / "digit.npy", images.images[0])
    return str(tmp_path / "digit.npy"), str(int(images.labels[0]))


def _search(tmp_path, out, *extra: str) -> list[str]:
    digit, label = _digit(tmp_path)
    return ["search", "digits_mlp", "--input", digit, "--label", label, "--span", "0.3", "--steps", "2",
            "--features", "10", "--all", "--max-files", "5", "--out", str(out), *extra]


def test_a_forced_run_clears_every_kind_of_runs_files(tmp_path):
    out = tmp_path / "run"
    assert main(_search(tmp_path, out)) == 0
    assert any(out.glob("example_*.npz")) and (out / "retrain.npz").exists()
    (out / "export").mkdir()
    (out / "export" / "old.npz").write_bytes(b"x")
    assert main(["batch", "digits_mlp", "--eps", "0.05", "--limit", "12", "--out", str(out), "--force"]) == 0
    names = {p.name for p in out.iterdir()}
    assert not any(n.startswith("example_") for n in names) and "retrain.npz" not in names and "export" not in names
    assert json.loads((out / "run.json").read_text())["command"] == "batch" and (out / "items.csv").exists()
    assert main(_search(tmp_path, out, "--force")) == 0
    assert not (out / "items.csv").exists() and not (out / "examples").exists()


def test_force_never_clears_a_folder_that_is_not_a_run_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.json").write_text("{}")
    (mine / "example_0000.npz").write_bytes(b"mine")
    assert main(_search(tmp_path, mine, "--force")) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert {p.name for p in mine.iterdir()} == {"summary.json", "example_0000.npz"}


def test_resuming_a_missing_folder_makes_nothing(tmp_path, capsys):
    assert main(_search(tmp_path, tmp_path / "nowhere", "--resume")) == 2
    assert "no such run folder" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()


def test_a_resumed_run_compares_files_by_contents_and_names_the_first_difference(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_search(tmp_path, out)) == 0
    again = _search(tmp_path, out, "--resume")
    again[again.index("--input") + 1] = os.path.relpath(again[again.index("--input") + 1])   # the same file
    assert main(again) == 0
    capsys.readouterr()
    changed = [v if v != "0.3" else "0.2" for v in _search(tmp_path, out, "--resume")]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "settings.span (0.3, now 0.2)" in err and "{" not in err
    batch = ["batch", "digits_mlp", "--eps", "0.01", "--limit", "3", "--out", str(tmp_path / "b")]
    assert main(batch) == 0
    assert main(batch[:-4] + ["--limit", "4", "--out", str(tmp_path / "b"), "--resume"]) == 2
    assert "set of images (--images, --limit)" in capsys.readouterr().err
    assert main(batch + ["--item-timeout", "5", "--resume"]) == 2
    assert "item_timeout (30.0, now 5.0)" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 and not os.access("/", os.W_OK), reason="needs a read-only place")
@pytest.mark.parametrize("option", ["--out", "--report"])
def test_an_output_that_cannot_be_written_is_a_named_error_before_any_work(tmp_path, capsys, option):
    digit, label = _digit(tmp_path)
    (tmp_path / "a_folder").mkdir()
    for target in (str(tmp_path / "a_folder"), "/proc/nowhere/x"):
        status = main(["certify", "digits_mlp", "--input", digit, "--label", label, "--eps", "0.3", option, target])
        assert status == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and option in err


def test_a_write_that_fails_leaves_no_partial_file(tmp_path):
    def fails(partial):
        partial.write_text("half")
        raise OSError(28, "No space left on device", str(partial))

    with pytest.raises(OSError):
        write_whole(tmp_path / "report.html", fails)
    assert list(tmp_path.iterdir()) == []


def test_certify_out_writes_the_file_named(tmp_path, capsys):
    digit, label = _digit(tmp_path)
    assert main(["certify", "digits_mlp", "--input", digit, "--label", label, "--eps", "0.3", "--out",
                 str(tmp_path / "cexfile"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "UNSAFE" and (tmp_path / "cexfile").is_file()
    assert not (tmp_path / "cexfile.npy").exists() and np.load(tmp_path / "cexfile").shape == (1, 8, 8)


def test_a_search_cut_short_by_its_timeout_says_so_when_every_example_was_asked_for(tmp_path, capsys):
    images = resources.test_images("mnist_cnn")
    np.save(tmp_path / "d.npy", images.images[0])
    assert main(["search", "mnist_cnn", "--input", str(tmp_path / "d.npy"), "--label", str(int(images.labels[0])),
                 "--span", "0.25", "--steps", "2", "--features", "8", "--heuristic", "gradient", "--rounds", "4",
                 "--all", "--budget-points", "300000", "--out", str(tmp_path / "r"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "UNSAFE" and "budget ran out" in record["reason"]
    assert "examples are those found before it" in record["reason"]


def test_prepare_refuses_a_file_as_the_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SmtVerifyError, match="is a file"):
        RunFolder.prepare(tmp_path / "f", "batch", {})


def test_a_run_without_examples_exports_empty_files_not_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["batch", "digits_mlp", "--eps", "0.001", "--limit", "3", "--out", str(run)]) == 0
    assert main(["export", str(run), "--format", "npz", "--json"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["exported"] == 0
    with np.load(record["to"], allow_pickle=False) as data:
        assert data["x"].shape == (0, 1, 8, 8) and data["y_true"].shape == (0,)


def test_json_after_an_interrupt_is_still_one_object(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "smtverify.cli", "batch", "digits_mlp", "--eps", "0.02",
                              "--out", str(out), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / "journal.jsonl"
    while child.poll() is None and not (journal.exists() and journal.read_text()):
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    stdout, _ = child.communicate(timeout=60)
    assert child.returncode == 130
    record = json.loads(stdout)
    assert record["complete"] is False and record["items"] >= 1

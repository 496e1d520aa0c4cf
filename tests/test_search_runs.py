"""A search's folder holds its own run: a previous run's examples are refused or cleared, and
retrain.npz always holds exactly the examples on disk."""
from __future__ import annotations

import numpy as np

from smtverify import resources
from smtverify.cli import main
from smtverify.export import ExampleWriter


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

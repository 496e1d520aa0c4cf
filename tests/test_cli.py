"""The command line on the bundled models: info, eval (npy and png), demo (search: test_search.py)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from smtverify import resources
from smtverify.cli import main


def test_info_on_bundled_cnn(capsys):
    assert main(["info", str(resources.model_path("mnist_cnn"))]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "[N,4,26,26]" in out and "supported: yes" in out and "MaxPool x1" in out


def test_eval_npy_and_png_agree(tmp_path, capsys):
    data = resources.test_images("mnist_cnn")
    image = data.images[0]
    np.save(tmp_path / "x.npy", image[None])               # with a leading batch axis of 1
    Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(tmp_path / "x.png")
    model = str(resources.model_path("mnist_cnn"))
    assert main(["eval", model, str(tmp_path / "x.npy"), "--json"]) == 0
    from_npy = json.loads(capsys.readouterr().out)
    assert main(["eval", model, str(tmp_path / "x.png"), "--json"]) == 0
    from_png = json.loads(capsys.readouterr().out)
    assert from_npy["class"] == from_png["class"] == int(data.labels[0])
    np.testing.assert_allclose(from_npy["output"], from_png["output"], atol=1e-5)


def test_demo_finds_proves_certifies_and_writes_files(tmp_path, capsys):
    assert main(["demo", "--json", "--out", str(tmp_path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in summary["models"]}
    assert set(rows) == set(resources.MODELS)
    assert all(r["same_class"] == r["images"] and r["max_abs_diff"] < 1e-4 for r in rows.values())
    assert summary["find"]["verdict"] == "UNSAFE"
    assert summary["prove"]["verdict"] == "SAFE" and summary["prove"]["cells"]["proven"] == summary["prove"]["cells"]["total"]
    assert summary["certify"]["verdict"] == "SAFE"
    example = np.load(summary["find"]["examples"][0]["input_file"])
    assert int(example["new_class"]) != int(example["original_class"]) == summary["label"]
    assert Image.open(tmp_path / "adversarial" / "example_0000.png").size == (28, 28)
    assert json.loads((tmp_path / "summary.json").read_text())["label"] == summary["label"]

"""An example's PNG, read back by `smtverify eval`, is the example: the same tensor, misclassified.
Where it cannot be (off the 8-bit lattice), the PNG is labelled a picture and the npz is the example
(issue 21, item 1)."""
import json
from pathlib import Path

import numpy as np
import pytest

from smtverify import resources
from smtverify.cli import main
from smtverify.demo import run_demo
from smtverify.export import ExampleWriter
from smtverify.inputs import read_array
from smtverify.onnx_import import load_onnx
from smtverify.png import save_png
from smtverify.search import SearchSettings, dlv_search

MODEL = str(resources.model_path("mnist_cnn"))


@pytest.fixture(scope="module")
def mnist():
    data = resources.test_images("mnist_cnn")
    return load_onnx(MODEL), data.images, data.labels.astype(int)


def eval_class(png: str, capsys) -> int:
    capsys.readouterr()
    assert main(["eval", MODEL, png, "--json"]) == 0
    return json.loads(capsys.readouterr().out)["class"]


def check_examples(found: list, label: int, capsys) -> None:
    """Every exact PNG reads back as its npz tensor and is misclassified; every other PNG is named a
    picture and says so in its npz."""
    assert found
    for f in found:
        saved = np.load(f.input_file)
        assert bool(saved["png_exact"]) == f.png_exact and str(saved["png"]) in f.png_file
        read_back = read_array(f.png_file).reshape(saved["input"].shape)
        assert np.array_equal(read_back, saved["input"]) == f.png_exact
        assert f.png_file.endswith(".picture.png") != f.png_exact
        if f.png_exact:
            assert eval_class(f.png_file, capsys) != label


def test_cli_search_from_a_png_writes_pngs_that_stay_adversarial(tmp_path, mnist, capsys):
    network, images, labels = mnist
    save_png(images[0], tmp_path / "digit.png")
    out = tmp_path / "out"
    assert main(["search", MODEL, "--input", str(tmp_path / "digit.png"), "--label", str(labels[0]), "--span", "0.25",
                 "--steps", "2", "--features", "8", "--heuristic", "gradient", "--rounds", "4", "--all",
                 "--max-files", "25", "--out", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["levels"] == 255 and record["span_used"] == 64 / 255 and "64/255" in record["grid_note"]
    assert len(record["examples"]) == 25
    for example in record["examples"]:
        assert example["png_exact"] and Path(example["png_file"]).name == Path(example["input_file"]).stem + ".png"
        assert np.array_equal(read_array(example["png_file"]), np.load(example["input_file"])["input"])
        assert eval_class(example["png_file"], capsys) == example["new_class"] != labels[0]
    assert (out / "original.png").is_file()


@pytest.mark.parametrize("family, span", [("brightness", 0.05), ("contrast", 0.1)])
def test_whole_input_families_label_inexact_pngs_as_pictures(tmp_path, mnist, capsys, family, span):
    network, images, labels = mnist
    settings = SearchSettings(family=family, span=span, steps=20, collect_all=True, timeout=30)
    with ExampleWriter(tmp_path, images[0]) as writer:
        report = dlv_search(network, images[0], labels[0], settings, on_found=writer.write)
    check_examples(report.examples, labels[0], capsys)
    assert not all(f.png_exact for f in report.examples)


def test_an_input_off_the_lattice_gets_picture_pngs_only(tmp_path, mnist, capsys):
    network, images, labels = mnist
    x = np.clip(images[0] + np.float32(0.001), 0, 1)
    settings = SearchSettings(span=0.25, steps=2, features=8, heuristic="gradient", rounds=4, timeout=30)
    with ExampleWriter(tmp_path, x) as writer:
        report = dlv_search(network, x, labels[0], settings, on_found=writer.write)
    assert report.summary()["levels"] is None
    check_examples(report.examples, labels[0], capsys)
    assert not any(f.png_exact for f in report.examples)
    assert (tmp_path / "original.picture.png").is_file() and not (tmp_path / "original.png").exists()


def test_the_demos_adversarial_png_stays_adversarial(tmp_path, capsys):
    summary = run_demo(tmp_path)
    pngs = sorted((tmp_path / "adversarial").glob("example_????.png"))
    assert pngs and len(pngs) == len(summary["find"]["examples"])
    for png in pngs:
        assert np.array_equal(read_array(png), np.load(png.with_suffix(".npz"))["input"])
        assert eval_class(str(png), capsys) != summary["label"]
        assert png.with_name(f"{png.stem}.panel.png").is_file()
    assert summary["find"]["settings"]["span"] == round(summary["find"]["span_used"], 6) == 0.25098

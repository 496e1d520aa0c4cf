"""The command line on the bundled models: info, eval (npy and png), demo (search: test_search.py)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from smtverify import resources
from smtverify.cli import main
from smtverify.cli_args import build_parser


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


@pytest.fixture
def digit(tmp_path):
    data = resources.test_images("digits_cnn")
    np.save(tmp_path / "digit.npy", data.images[0])
    return str(tmp_path / "digit.npy"), str(int(data.labels[0]))


def test_certify_shows_the_smallest_proven_margin(digit, capsys):
    x, label = digit
    certify = ["certify", "digits_cnn", "--input", x, "--label", label, "--eps", "0.01"]
    assert main(certify + ["--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["verdict"] == "SAFE" and record["min_margin"] > 0
    assert main(certify) == 0
    text = capsys.readouterr().out
    assert f"smallest proven margin: {record['min_margin']:.6g}" in text and "smallest proven margin" in record["guarantee"]


def test_minimal_needs_no_span_and_says_so_in_words_when_no_span_has_an_example(digit, tmp_path, capsys):
    x, label = digit
    search = ["search", "digits_cnn", "--input", x, "--label", label, "--steps", "1", "--out", str(tmp_path / "out"),
              "--force"]
    assert main(search + ["--pixels", "10,20", "--minimal", "0.001,0.002"]) == 0
    text = capsys.readouterr().out
    assert "None" not in text and "no adversarial example at any span of [0.001, 0.002]" in text
    assert main(search + ["--pixels", "10,20", "--minimal", "0.001,0.002", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["min_span"] is None
    assert main(search + ["--features", "6", "--minimal", "0.3,0.6,1"]) == 0
    assert "smallest span with an adversarial example" in capsys.readouterr().out
    assert main(search) == 2                               # neither --span nor --minimal
    assert "--span" in capsys.readouterr().err


def test_every_option_has_help_and_every_command_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in subparsers.choices.items():
        assert command.epilog and f"smtverify {name}" in command.epilog, name
        for action in command._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}"


def test_eval_reads_a_batch_with_labels_and_the_tools_own_example_files(tmp_path, capsys):
    """eval takes an .npz of inputs and labels, an .npy with a batch axis, and smtverify's own
    example and retrain files; with labels it says which are misclassified and the accuracy,
    cross-checked here against onnxruntime."""
    from smtverify import resources
    from smtverify.onnx_import import load_onnx
    from smtverify.reference import OnnxRuntimeExecutor

    images = resources.test_images("mnist_cnn")
    x, y = images.images[:12], images.labels[:12].astype(np.int64)
    np.savez(tmp_path / "set.npz", x=x, y=y)
    np.save(tmp_path / "batch.npy", x)
    network = load_onnx(resources.model_path("mnist_cnn"))
    truth = np.argmax(OnnxRuntimeExecutor(network).logits(x), axis=1)
    assert main(["eval", "mnist_cnn", str(tmp_path / "set.npz"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["classes"] == truth.tolist() and record["accuracy"] == float(np.mean(truth == y))
    assert main(["eval", "mnist_cnn", str(tmp_path / "batch.npy")]) == 0
    assert capsys.readouterr().out.count("class") == 12
    np.savez(tmp_path / "example_0000.npz", input=x[0], original_class=np.int64((truth[0] + 1) % 10))
    assert main(["eval", "mnist_cnn", str(tmp_path / "example_0000.npz")]) == 0
    assert "misclassified" in capsys.readouterr().out
    np.savez(tmp_path / "labels_only.npz", y=y)
    assert main(["eval", "mnist_cnn", str(tmp_path / "labels_only.npz")]) == 2
    assert "holds no inputs" in capsys.readouterr().err

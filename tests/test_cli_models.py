"""Bundled models by name wherever a model path goes, and `smtverify models` listing them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from smtverify import resources
from smtverify.cli import EXIT_ERROR, main


def status_of(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


def test_models_lists_every_bundled_model_with_shape_and_classes(capsys):
    assert main(["models", "--json"]) == 0
    rows = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert set(rows) == set(resources.MODELS)
    assert rows["mnist_cnn"]["input_shape"] == [1, 28, 28] and rows["digits_mlp"]["input_shape"] == [1, 8, 8]
    assert all(m["classes"] == 10 and m["about"] for m in rows.values())
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(resources.MODELS) and lines[-1].startswith("mnist_cnn") and "1x28x28" in lines[-1]


def test_a_bundled_name_works_where_a_path_does(tmp_path, capsys):
    data = resources.test_images("digits_mlp")
    np.save(tmp_path / "digit.npy", data.images[0])
    assert main(["eval", "digits_mlp", str(tmp_path / "digit.npy"), "--json"]) == 0
    by_name = json.loads(capsys.readouterr().out)
    assert main(["eval", str(resources.model_path("digits_mlp")), str(tmp_path / "digit.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["output"] == by_name["output"]
    assert by_name["class"] == int(data.labels[0])


def test_a_file_named_like_a_bundled_model_wins(tmp_path, capsys, monkeypatch):
    shutil.copy(resources.model_path("digits_cnn"), tmp_path / "mnist_cnn")
    monkeypatch.chdir(tmp_path)
    assert main(["info", "mnist_cnn", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["input"]["shape"] == ["N", 1, 8, 8]


@pytest.mark.parametrize("command", [["info"], ["certify", "--input", "x.npy", "--label", "0", "--eps", "0.1"]])
def test_neither_a_file_nor_a_bundled_model_is_one_named_error(capsys, command):
    assert status_of([command[0], "mnist_cnnn", *command[1:]]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mnist_cnnn" in err[0] and "bundled model" in err[0] and "Traceback" not in err[0]

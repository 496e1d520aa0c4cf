"""`--json` prints exactly one JSON object on stdout, for every command that takes it; `vnnlib
--json` holds the counterexample, and without --json its first stdout line is still the verdict."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from onnx import helper

from smtverify import resources
from smtverify.cli import main
from smtverify.cli_args import build_parser
from tests.conftest import make_model, save
from tests.test_cli_hardening import PROPERTY


@pytest.fixture
def files(tmp_path):
    """A two-input net whose property is violated (y1 = 2 x1 can exceed y0 = x0), an instances.csv
    over them, and a bundled test digit."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="dense", transB=1)]
    weights = {"w": np.array([[1.0, 0.0], [0.0, 2.0]], np.float32), "b": np.zeros(2, np.float32)}
    onnx_path = save(make_model(nodes, ["N", 2], initializers=weights), tmp_path)
    prop = tmp_path / "prop.vnnlib"
    prop.write_text(PROPERTY)
    with open(tmp_path / "instances.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["onnx", "vnnlib", "timeout_s", "expected"], [onnx_path.name, prop.name, 10, "sat"]])
    data = resources.test_images("digits_cnn")
    np.save(tmp_path / "digit.npy", data.images[0])
    return {"onnx": str(onnx_path), "prop": str(prop), "csv": str(tmp_path / "instances.csv"),
            "digit": str(tmp_path / "digit.npy"), "label": str(int(data.labels[0])), "tmp": tmp_path}


COMMANDS = {
    "models": lambda f: ["models"],
    "info": lambda f: ["info", "digits_cnn"],
    "eval": lambda f: ["eval", "digits_cnn", f["digit"]],
    "vnnlib": lambda f: ["vnnlib", f["onnx"], f["prop"], "--timeout", "20"],
    "bench": lambda f: ["bench", f["csv"], "--out", str(f["tmp"] / "bench-run")],
    "certify": lambda f: ["certify", "digits_cnn", "--input", f["digit"], "--label", f["label"], "--eps", "0.01"],
    "encode": lambda f: ["encode", f["onnx"], f["prop"], "-o", str(f["tmp"] / "query.smt2"), "--lp-seconds", "0"],
    "search": lambda f: ["search", "digits_cnn", "--input", f["digit"], "--label", f["label"], "--span", "0.1",
                         "--steps", "1", "--out", str(f["tmp"] / "search")],
    "demo": lambda f: ["demo", "--out", str(f["tmp"] / "demo")],
    "batch": lambda f: ["batch", "digits_mlp", "--eps", "0.01", "--limit", "3", "--out", str(f["tmp"] / "batch")],
    "export": lambda f: ["export", str(f["tmp"]), "--format", "json"],       # not a run folder: an error object
    "report": lambda f: ["report", str(f["tmp"])],
}


def commands_taking_json() -> set[str]:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name for name, p in subparsers.choices.items() if any("--json" in a.option_strings for a in p._actions)}


def test_every_command_taking_json_is_covered_here():
    assert commands_taking_json() == set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_json_is_one_object_on_stdout(files, capsys, name):
    main(COMMANDS[name](files) + ["--json"])
    record = json.loads(capsys.readouterr().out)
    assert isinstance(record, dict) and record


def test_vnnlib_json_holds_the_counterexample_and_the_text_starts_with_the_word(files, capsys):
    assert main(["vnnlib", files["onnx"], files["prop"], "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["result"] == "sat" and record["verdict"] == "UNSAFE"
    inputs, outputs = record["counterexample"]["inputs"], record["counterexample"]["outputs"]
    assert len(inputs) == 2 and len(outputs) == 2 and all(isinstance(v, float) for v in inputs + outputs)
    assert all(-1 <= v <= 1 for v in inputs) and outputs[1] >= outputs[0]
    assert main(["vnnlib", files["onnx"], files["prop"]]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "sat"


def test_vnnlib_json_on_a_bad_property_is_still_one_object(files, capsys):
    (files["tmp"] / "bad.vnnlib").write_text("(assert (>= X_9 1.0))\n")
    assert main(["vnnlib", files["onnx"], str(files["tmp"] / "bad.vnnlib"), "--json"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out)["result"] == "error"
    assert len(captured.err.strip().splitlines()) == 1 and "bad.vnnlib" in captured.err


def test_bench_saves_each_counterexample_beside_its_result(files, capsys):
    folder = files["tmp"] / "bench-run"
    assert main(["bench", files["csv"], "--out", str(folder)]) == 0
    row = next(csv.DictReader(open(folder / "results.csv")))
    saved = folder / row["counterexample"]
    assert row["verdict"] == "sat" and saved.suffix == ".counterexample" and saved.is_file()
    lines = saved.read_text().splitlines()
    assert lines[0] == "sat" and lines[1] == "(" and lines[-1] == ")"
    values = {name: float(value) for name, value in (line.strip("()").split() for line in lines[2:-1])}
    assert set(values) == {"X_0", "X_1", "Y_0", "Y_1"} and values["Y_1"] >= values["Y_0"]


def test_a_named_error_with_json_is_one_object_on_stdout_and_one_line_on_stderr(files, capsys):
    assert main(["certify", "digits_cnn", "--input", files["digit"], "--label", files["label"], "--eps", "0.1",
                 "--domain", "0.5,1", "--json"]) == 2
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["exit_status"] == 2 and "--domain" in record["error"]
    assert len(captured.err.strip().splitlines()) == 1 and "--domain" in captured.err

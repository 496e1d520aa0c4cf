"""Every value a user can type is checked before any work starts (one named error, exit 2), an
unexpected exception inside a decision never ends a run silently, and a closed stdout ends quietly."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from onnx import helper

from smtverify import resources
from smtverify.cli import EXIT_ERROR, EXIT_INTERNAL, main
from smtverify.verify import Verifier
from tests.conftest import SHARED, make_model, needs_shared, save

PROPERTY = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 -1.0))
(assert (<= X_0 1.0))
(assert (>= X_1 -1.0))
(assert (<= X_1 1.0))
(assert (>= Y_1 Y_0))
"""


@pytest.fixture
def instance(tmp_path):
    """A two-input net whose property is violated (y1 = 2 x1 can exceed y0 = x0)."""
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="dense", transB=1)]
    model = make_model(nodes, ["N", 2], initializers={"w": np.array([[1.0, 0.0], [0.0, 2.0]], np.float32),
                                                      "b": np.zeros(2, np.float32)})
    onnx_path = save(model, tmp_path)
    prop = tmp_path / "prop.vnnlib"
    prop.write_text(PROPERTY)
    return onnx_path, prop


@pytest.fixture
def digit(tmp_path):
    data = resources.test_images("digits_cnn")
    path = tmp_path / "digit.npy"
    np.save(path, data.images[0])
    return str(resources.model_path("digits_cnn")), str(path), int(data.labels[0])


def one_error_line(capsys, field: str) -> None:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and field in err[0], err


@pytest.mark.parametrize("flags, field", [
    (["--eps", "-0.1"], "--eps"), (["--eps", "nan"], "--eps"), (["--eps", "inf"], "--eps"),
    (["--eps", "0.1", "--timeout", "-5"], "--timeout"), (["--eps", "0.1", "--timeout", "0"], "--timeout"),
    (["--eps", "0.1", "--domain", "0.5,1"], "--domain"), (["--eps", "0.1", "--domain", "nan,1"], "--domain"),
    (["--eps", "0.1", "--domain", "1,0"], "--domain"), (["--eps", "0.1", "--label", "10"], "--label"),
    (["--eps", "0.1", "--out", "/no/such/folder/x.npy"], "--out"),
])
def test_certify_rejects_bad_values_with_a_named_error(digit, capsys, flags, field):
    model, x, label = digit
    assert status_of(["certify", model, "--input", x, "--label", str(label), *flags]) == EXIT_ERROR
    one_error_line(capsys, field)


def status_of(argv: list[str]) -> int:
    """main's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e39])
def test_an_input_with_values_no_input_can_have_is_rejected(digit, tmp_path, capsys, value):
    model, x, label = digit
    bad = np.load(x).astype(np.float64)
    bad.reshape(-1)[5] = value
    np.save(tmp_path / "bad.npy", bad)
    assert main(["certify", model, "--input", str(tmp_path / "bad.npy"), "--label", str(label), "--eps", "0.1"]) == EXIT_ERROR
    one_error_line(capsys, "bad.npy")


def test_domain_with_a_negative_low_written_after_a_space_parses(digit, capsys):
    model, x, label = digit
    assert main(["certify", model, "--input", x, "--label", str(label), "--eps", "0.01", "--domain", "-1,1",
                 "--timeout", "20", "--json"]) == 0
    assert '"verdict"' in capsys.readouterr().out


def test_vnnlib_rejects_a_timeout_that_is_not_positive(instance):
    model, prop = instance
    assert status_of(["vnnlib", str(model), str(prop), "--timeout", "-5"]) == EXIT_ERROR


def test_info_on_an_unsupported_operator_exits_2_naming_the_node(tmp_path, capsys):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="dense"),
             helper.make_node("Cos", ["h"], ["y"], name="weird")]
    path = save(make_model(nodes, ["N", 3], initializers={"w": np.ones((3, 2), np.float32)}), tmp_path)
    assert main(["info", str(path)]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert "UNSUPPORTED" in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Cos" in err[0] and str(path) in err[0]


def broken(*_args, **_kwargs):
    raise RuntimeError("a defect planted by the test")


def test_vnnlib_internal_error_prints_error_first_and_writes_it(instance, tmp_path, capsys, monkeypatch):
    model, prop = instance
    monkeypatch.setattr(Verifier, "verify", broken)
    out = tmp_path / "result.txt"
    assert main(["vnnlib", str(model), str(prop), "--out", str(out)]) == EXIT_INTERNAL
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "error"
    assert out.read_text().strip() == "error"
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "RuntimeError" in err[0] and "planted" in err[0]
    assert main(["vnnlib", str(model), str(prop), "--debug"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def test_internal_error_in_any_command_is_one_line_and_debug_raises(digit, capsys, monkeypatch):
    model, x, label = digit
    monkeypatch.setattr(Verifier, "verify", broken)
    assert main(["certify", model, "--input", x, "--label", str(label), "--eps", "0.1"]) == EXIT_INTERNAL
    one_error_line(capsys, "internal error")
    with pytest.raises(RuntimeError):
        main(["certify", model, "--input", x, "--label", str(label), "--eps", "0.1", "--debug"])


def write_csv(path, rows) -> str:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return str(path)


def test_bench_records_an_internal_error_and_goes_on(instance, tmp_path, capsys, monkeypatch):
    model, prop = instance
    calls = []
    real_verify = Verifier.verify

    def fails_once(self, p, **options):
        calls.append(p)
        return broken() if len(calls) == 1 else real_verify(self, p, **options)

    monkeypatch.setattr(Verifier, "verify", fails_once)
    rows = [["onnx", "vnnlib", "timeout_s", "expected"], [model.name, prop.name, 10, "sat"], [model.name, prop.name, 10, "sat"]]
    out = tmp_path / "run"
    assert main(["bench", write_csv(tmp_path / "instances.csv", rows), "--out", str(out)]) == 0
    results = list(csv.DictReader(open(out / "results.csv")))
    assert [r["verdict"] for r in results] == ["error", "sat"]
    assert "RuntimeError" in results[0]["detail"]


@pytest.mark.parametrize("rows, field", [
    ([["onnx", "vnnlib"], ["model.onnx", "prop.vnnlib"]], "header"),
    ([["model.onnx", "prop.vnnlib"]], "column"),
    ([["missing.onnx", "prop.vnnlib", "10"]], "onnx"),
    ([["model.onnx", "missing.vnnlib", "10"]], "vnnlib"),
    ([["model.onnx", "prop.vnnlib", "ten"]], "timeout_s"),
    ([["model.onnx", "prop.vnnlib", "-1"]], "timeout_s"),
    ([["model.onnx", "prop.vnnlib", "10", "maybe"]], "expected"),
    ([], "no instances"),
])
def test_bench_rejects_a_bad_instances_csv_before_any_work(instance, tmp_path, capsys, rows, field):
    path = write_csv(tmp_path / "instances.csv", rows)
    assert main(["bench", path, "--out", str(tmp_path / "run")]) == EXIT_ERROR
    one_error_line(capsys, field)


def test_bench_on_a_missing_csv(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nowhere.csv")]) == EXIT_ERROR
    one_error_line(capsys, "nowhere.csv")


def test_closed_stdout_ends_quietly(instance):
    model, prop = instance
    script = ("import sys; from smtverify.cli import main; sys.exit(main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", script, "info", str(model)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()                   # the reader has gone, as after `| head -0`
    _, err = child.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err


@needs_shared
def test_interrupted_bench_keeps_the_rows_it_wrote(tmp_path):
    """Ctrl-C during the second instance: the first row is on disk, the run exits 130 quietly."""
    acas = SHARED / "acasxu"
    rows = [["onnx", "vnnlib", "timeout_s", "expected"],
            [acas / "onnx/ACASXU_run2a_1_1_batch_2000.onnx", acas / "vnnlib/prop_1.vnnlib", 60, "unsat"],
            [acas / "onnx/ACASXU_run2a_3_3_batch_2000.onnx", acas / "vnnlib/prop_2.vnnlib", 60, "unsat"]]
    folder = tmp_path / "run"
    out = folder / "results.csv"
    command = [sys.executable, "-m", "smtverify.cli", "bench", write_csv(tmp_path / "i.csv", rows), "--out", str(folder)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.is_file() or len(out.read_text().splitlines()) < 2):
        time.sleep(0.1)
    time.sleep(1.0)                                   # well into the second instance
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130 and b"Traceback" not in err and b"--resume" in err
    assert [r["verdict"] for r in csv.DictReader(open(out))] == ["unsat"]
    assert json.loads((folder / "summary.json").read_text())["complete"] is False
    done = subprocess.run(command + ["--resume", "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[1/2]" not in done.stderr and "[2/2]" in done.stderr       # the first instance is not decided again
    assert [r["verdict"] for r in csv.DictReader(open(out))] == ["unsat", "unsat"]
    assert json.loads(done.stdout)["unsat"] == 2

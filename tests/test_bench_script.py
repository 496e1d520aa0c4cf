"""scripts/bench_verify.py: a suite's row in docs/benchmarks.md, and its independent re-check of sat
answers (a counterexample that does not violate the property counts as wrong)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import numpy as np

from smtverify.bench import read_instances, run
from tests.conftest import ROOT, SHARED, needs_shared

pytestmark = needs_shared


def bench_script():
    spec = importlib.util.spec_from_file_location("bench_verify", ROOT / "scripts" / "bench_verify.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_suite_row_and_record(tmp_path):
    markdown = tmp_path / "benchmarks.md"
    markdown.write_text("# Benchmarks\n\n<!-- latest-results -->\n<!-- /latest-results -->\n\n## History\nkept\n")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_verify.py"), "--suites", "smoke",
                           "--markdown", str(markdown), "--out", str(tmp_path / "record.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "record.json").read_text())
    summary = record["suites"]["smoke"]["summary"][0]
    assert (summary["sat"], summary["unsat"], summary["wrong"], summary["error"]) == (1, 4, 0, 0)
    text = markdown.read_text()
    assert "| smoke | 5 | 1 | 4 | 0 | 0 | 0 | 0 |" in text and "--suites smoke" in text
    assert text.endswith("## History\nkept\n")
    compared = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_bench.py"), str(tmp_path / "record.json"),
                               str(tmp_path / "record.json")], capture_output=True, text=True, timeout=60)
    assert compared.returncode == 0 and "smoke          5             5              5" in compared.stdout
    changed = json.loads((tmp_path / "record.json").read_text())
    changed["suites"]["smoke"]["instances"][0]["smtverify"] = "timeout"
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    compared = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_bench.py"), str(tmp_path / "record.json"),
                               str(tmp_path / "changed.json")], capture_output=True, text=True, timeout=60)
    assert compared.returncode == 1 and "-> timeout" in compared.stdout


def test_recheck_accepts_a_real_counterexample_and_rejects_a_forged_one(tmp_path):
    script = bench_script()
    instance = [i for i in read_instances(SHARED / "smoke" / "instances.csv") if i.expected == "sat"][0]
    outcome = next(run([instance]))
    assert outcome.verdict == "sat" and script.recheck(outcome, tmp_path)
    real = outcome.result.counterexample
    moved = dataclasses.replace(real, input=(real.input + np.float32(1e3)).astype(np.float32))   # out of the box
    forged = dataclasses.replace(outcome, result=dataclasses.replace(outcome.result, counterexample=moved))
    assert not script.recheck(forged, tmp_path)


def test_sample_sizes_per_suite():
    assert bench_script().sample_sizes(["10", "oval21=3"]) == {None: 10, "oval21": 3}


def test_match_runs_only_the_instances_it_names(tmp_path):
    """--match keeps the instances whose network or property path contains the text."""
    instances = read_instances(SHARED / "smoke" / "instances.csv")
    chosen = instances[0].vnnlib.name
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_verify.py"), "--suites", "smoke", "--match",
                           chosen, "--out", str(tmp_path / "record.json")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "record.json").read_text())["suites"]["smoke"]["instances"]
    assert [row["vnnlib"] for row in rows] == [chosen]

"""A short, fixed-seed profile of scripts/fuzz_readers.py: mutated real files must only ever load or
raise a named error. The full runs (10^4 trials per reader) are the script's own job."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import fuzz_readers  # noqa: E402  (a script, found through sys.path)
from fuzz_pool import CRASH, HANG, LOADED, MEMORY, Outcome, WorkerPool  # noqa: E402


def test_short_profile_has_no_defects():
    onnx_record = fuzz_readers.run_campaign(("onnx",), 150, seed=2024)
    # Properties of 3072 inputs take 80 ms to read: the profile favours the small ones more.
    vnnlib_record = fuzz_readers.run_campaign(("vnnlib",), 300, seed=2024, size_scale=10_000)
    for record, trials in ((onnx_record, 150), (vnnlib_record, 300)):
        (counts,) = record["counts"].values()
        assert sum(counts.values()) == trials
        assert record["defects"] == [], fuzz_readers.format_report(record)
        assert counts["named_error"] > 0
    assert onnx_record["counts"]["onnx"]["loaded"] > 0


def test_without_the_shared_benchmarks_the_bundled_files_are_fuzzed(tmp_path):
    assert {s.folder for s in fuzz_readers.onnx_sources(tmp_path)} == {"bundled"}
    assert [s.label for s in fuzz_readers.vnnlib_sources(tmp_path)] == ["builtin/seed.vnnlib"]
    record = fuzz_readers.run_campaign(("onnx", "vnnlib"), 40, seed=7, shared=tmp_path)
    assert record["defects"] == [], fuzz_readers.format_report(record)


def test_trials_are_determined_by_seed_and_index():
    fuzzer = fuzz_readers.Fuzzer(seed=3)
    for reader in ("onnx", "vnnlib"):
        first, again = fuzzer.trial(reader, 17), fuzzer.trial(reader, 17)
        assert first == again
        assert fuzzer.trial(reader, 18).data != first.data or fuzzer.trial(reader, 18).source != first.source


def misbehave(kind: str, index: int) -> Outcome:
    """A stand-in reader for the pool: hangs, dies, exhausts memory, or answers."""
    if kind == "hang":
        time.sleep(60)
    if kind == "crash":
        os._exit(3)
    if kind == "memory":
        try:
            bytearray(3 << 30)
        except MemoryError:
            return Outcome(MEMORY)
    return Outcome(LOADED)


def test_pool_counts_hangs_crashes_and_memory_and_replaces_the_worker():
    jobs = [("hang", 0), ("crash", 1), ("memory", 2), ("fine", 3), ("fine", 4)]
    with WorkerPool(misbehave, size=2, time_limit=1.0, memory_limit=1 << 30) as pool:
        outcomes = {job: outcome.kind for job, outcome in pool.run(jobs)}
    assert outcomes == {("hang", 0): HANG, ("crash", 1): CRASH, ("memory", 2): MEMORY,
                        ("fine", 3): LOADED, ("fine", 4): LOADED}


@pytest.mark.parametrize("spec", ["onnx:5", "vnnlib:5"])
def test_reproduce_rewrites_the_trial_input(tmp_path, spec, capsys):
    try:
        fuzz_readers.main(["--reproduce", spec, "--seed", "1", "--out", str(tmp_path)])
    except fuzz_readers.SmtVerifyError:
        pass                                    # a named error is the trial's expected outcome
    (saved,) = tmp_path.iterdir()
    reader, index = spec.split(":")
    assert saved.read_bytes() == fuzz_readers.Fuzzer(seed=1, readers=(reader,)).trial(reader, int(index)).data
    assert str(saved) in capsys.readouterr().out

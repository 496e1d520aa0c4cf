"""Fuzz the ONNX and VNN-LIB readers with mutated real files and count how each trial ends.

Every trial must end `loaded` or `named_error` (an SmtVerifyError naming what is wrong); any other
outcome is a defect of the reader: `other_exception` (a traceback a user would see), `hang` (no
answer within the time limit), `memory` (more than the memory limit), or `crash` (the interpreter
died). Trials are generated from (seed, reader, index) alone, so every defect has a one-line
reproducer, and the counts of a run are the same on every machine.

    python scripts/fuzz_readers.py --trials 10000 --reader both --seed 1 --json fuzz.json
    python scripts/fuzz_readers.py --reproduce onnx:123 --seed 1    # rerun one trial, traceback shown
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutate_onnx import mutate_onnx  # noqa: E402  (a sibling script, found through sys.path)
from fuzz_mutate_vnnlib import mutate_vnnlib, tokenize  # noqa: E402
from fuzz_pool import (DEFECTS, LOADED, MEMORY, NAMED_ERROR, OTHER_EXCEPTION, OUTCOMES, Outcome,  # noqa: E402
                       WorkerPool)

from smtverify.errors import SmtVerifyError  # noqa: E402
from smtverify.onnx_import import load_onnx  # noqa: E402
from smtverify.vnnlib import read_vnnlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"
BUNDLED_MODELS = ROOT / "smtverify" / "data" / "models"
READERS = ("onnx", "vnnlib")
SUFFIX = {"onnx": ".onnx", "vnnlib": ".vnnlib"}
SIZE_SCALE = 200_000      # bytes: a file this big is sampled half as often as a tiny one
# Used only when ../shared/benchmarks is absent: the fuzzer still has a property to mutate.
SEED_PROPERTY = """; a two-input property: the box, and the output condition that is unsafe
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 -0.5))
(assert (<= X_0 0.5))
(assert (and (>= X_1 0.0) (<= X_1 1e-3)))
(assert (or (and (>= Y_0 Y_1) (<= Y_0 2.5)) (<= (+ Y_1 (* -2 Y_0)) 0.125)))
"""


@dataclass(frozen=True)
class Source:
    """One unmutated file of the corpus."""

    label: str          # folder/name, for reports
    folder: str
    data: bytes


@dataclass(frozen=True)
class Trial:
    """One mutated input and how to read it; generated from (seed, reader, index) alone."""

    reader: str
    index: int
    source: str
    mutation: str
    data: bytes
    options: dict = field(default_factory=dict)    # strict=..., or n_inputs / n_outputs


# ----- the corpus ----------------------------------------------------------------------------
def onnx_sources(shared: Path = SHARED) -> list[Source]:
    """The shared benchmark nets and the bundled models, each distinct file once."""
    shared_nets = [Source(f"{p.parts[-3]}/{p.name}", p.parts[-3], p.read_bytes())
                   for p in sorted(shared.glob("*/onnx/*.onnx"))]
    bundled = [Source(f"bundled/{p.name}", "bundled", p.read_bytes()) for p in sorted(BUNDLED_MODELS.glob("*.onnx"))]
    return distinct(shared_nets + bundled)


def vnnlib_sources(shared: Path = SHARED) -> list[Source]:
    """The shared benchmark properties, or a built-in one when the benchmarks are absent."""
    sources = [Source(f"{p.parts[-3]}/{p.name}", p.parts[-3], p.read_bytes())
               for p in sorted(shared.glob("*/vnnlib/*.vnnlib"))]
    return distinct(sources) or [Source("builtin/seed.vnnlib", "builtin", SEED_PROPERTY.encode())]


def distinct(sources: list[Source]) -> list[Source]:
    """Drops byte-identical copies (the smoke suite repeats an ACAS Xu net)."""
    seen, kept = set(), []
    for source in sources:
        digest = hashlib.sha256(source.data).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(source)
    return kept


def sampling_weights(sources: list[Source], size_scale: float = SIZE_SCALE) -> list[float]:
    """Each folder weighs the same (45 ACAS Xu nets must not crowd out the 3 CIFAR ones), and small
    files are favoured: they read faster and their mutations reach the same checks. A file of
    `size_scale` bytes is drawn half as often as a tiny one."""
    per_folder = Counter(s.folder for s in sources)
    return [1.0 / per_folder[s.folder] / (1.0 + len(s.data) / size_scale) for s in sources]


class Fuzzer:
    """The corpora, the seed, and caches of parsed sources (filled lazily, per process)."""

    def __init__(self, seed: int, shared: Path = SHARED, readers: tuple[str, ...] = READERS,
                 size_scale: float = SIZE_SCALE) -> None:
        self.seed = seed
        self.sources = {"onnx": onnx_sources(shared) if "onnx" in readers else [],
                        "vnnlib": vnnlib_sources(shared) if "vnnlib" in readers else []}
        self.weights = {reader: sampling_weights(s, size_scale) for reader, s in self.sources.items()}
        self.models: dict[str, onnx.ModelProto] = {}
        self.tokens: dict[str, list[str]] = {}
        self.counts: dict[str, tuple[int, int]] = {}
        self.workdir = Path(tempfile.gettempdir())     # run_campaign gives each run its own folder

    def trial(self, reader: str, index: int) -> Trial:
        rng = random.Random(f"{self.seed}/{reader}/{index}")
        source = rng.choices(self.sources[reader], self.weights[reader])[0]
        if reader == "onnx":
            data, mutation = mutate_onnx(source.data, self.model(source), rng)
            options = {"strict": rng.random() < 0.8}
        else:
            data, mutation = mutate_vnnlib(self.tokenized(source), rng)
            options = self.declared_counts(source, rng)
        return Trial(reader, index, source.label, mutation, data, options)

    def model(self, source: Source) -> onnx.ModelProto:
        if source.label not in self.models:
            self.models[source.label] = onnx.load_from_string(source.data)
        return self.models[source.label]

    def tokenized(self, source: Source) -> list[str]:
        if source.label not in self.tokens:
            self.tokens[source.label] = tokenize(source.data.decode("utf-8"))
        return self.tokens[source.label]

    def declared_counts(self, source: Source, rng: random.Random) -> dict:
        """The sizes a network would pass: the unmutated file's, none, or one off."""
        if source.label not in self.counts:
            text = source.data.decode("utf-8")
            self.counts[source.label] = tuple(len(set(re.findall(rf"declare-const\s+{kind}_(\d+)", text)))
                                              for kind in "XY")
        n_inputs, n_outputs = self.counts[source.label]
        draw = rng.random()
        if draw < 0.7:
            return {"n_inputs": n_inputs, "n_outputs": n_outputs}
        if draw < 0.9:
            return {}
        return {"n_inputs": n_inputs + rng.choice([-1, 1]), "n_outputs": n_outputs}

    def run(self, reader: str, index: int) -> Outcome:
        """Generate and read one trial (inside a worker)."""
        trial = self.trial(reader, index)
        path = self.workdir / f"trial-{os.getpid()}{SUFFIX[reader]}"
        path.write_bytes(trial.data)
        try:
            with warnings.catch_warnings():   # overflow in odd weights is not an outcome; keep the report legible
                warnings.simplefilter("ignore", RuntimeWarning)
                return read_and_classify(trial, path)
        finally:
            path.unlink(missing_ok=True)


# ----- one trial -----------------------------------------------------------------------------
def read(trial: Trial, path: Path) -> object:
    if trial.reader == "onnx":
        return load_onnx(path, **trial.options)
    return read_vnnlib(path, **trial.options)


def read_and_classify(trial: Trial, path: Path) -> Outcome:
    """The outcome of reading one trial's file; any exception but a named error is a defect."""
    try:
        read(trial, path)
    except SmtVerifyError as error:
        return Outcome(NAMED_ERROR, type(error).__name__, str(error)[:400], names_file=error.file is not None)
    except MemoryError as error:
        return Outcome(MEMORY, "MemoryError", str(error)[:400], innermost_frame(error))
    except Exception as error:   # noqa: BLE001  (any other exception is exactly what we count)
        return Outcome(OTHER_EXCEPTION, type(error).__name__, str(error)[:400], innermost_frame(error))
    return Outcome(LOADED)


def innermost_frame(error: BaseException) -> str:
    """Where the exception arose, preferring the project's own code over the libraries it called."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "smtverify" in Path(f.filename).parts]
    frame = (ours or frames)[-1] if frames else None
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else ""


# ----- a campaign ----------------------------------------------------------------------------
class Tally:
    """Counts per reader and outcome, named errors by type, and the defects' records."""

    def __init__(self, fuzzer: Fuzzer, readers: tuple[str, ...]) -> None:
        self.fuzzer = fuzzer
        self.counts = {reader: Counter({outcome: 0 for outcome in OUTCOMES}) for reader in readers}
        self.named = {reader: Counter() for reader in readers}
        self.unplaced = Counter()
        self.defects: list[dict] = []

    def add(self, reader: str, index: int, outcome: Outcome) -> None:
        self.counts[reader][outcome.kind] += 1
        if outcome.kind == NAMED_ERROR:
            self.named[reader][outcome.error_type] += 1
            self.unplaced[reader] += not outcome.names_file
        elif outcome.kind in DEFECTS:
            self.defects.append(defect_record(self.fuzzer, reader, index, outcome))

    def record(self) -> dict:
        return {"seed": self.fuzzer.seed, "readers": list(self.counts),
                "counts": {r: dict(c) for r, c in self.counts.items()},
                "named_errors": {r: dict(c.most_common()) for r, c in self.named.items()},
                "named_errors_without_file": dict(self.unplaced),
                "defects": sorted(self.defects, key=lambda d: (d["reader"], d["index"]))}


def run_campaign(readers: tuple[str, ...], trials: int, seed: int, workers: int = 2,
                 time_limit: float = 10.0, memory_limit: int = 2 << 30, shared: Path = SHARED,
                 size_scale: float = SIZE_SCALE, progress: bool = False) -> dict:
    """Run `trials` trials per reader; returns counts per reader and outcome, and the defects."""
    fuzzer = Fuzzer(seed, shared, readers, size_scale)
    tally = Tally(fuzzer, readers)
    jobs = [(reader, index) for reader in readers for index in range(trials)]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz_readers_") as workdir:
        fuzzer.workdir = Path(workdir)          # before the workers fork: they write trials there
        with WorkerPool(fuzzer.run, workers, time_limit, memory_limit) as pool:
            for done, ((reader, index), outcome) in enumerate(pool.run(jobs), start=1):
                tally.add(reader, index, outcome)
                if progress and done % 1000 == 0:
                    print(f"  {done}/{len(jobs)} trials, {len(tally.defects)} defect(s)", file=sys.stderr)
    return {**tally.record(), "trials_per_reader": trials, "elapsed_s": round(time.monotonic() - start, 1)}


def defect_record(fuzzer: Fuzzer, reader: str, index: int, outcome: Outcome) -> dict:
    trial = fuzzer.trial(reader, index)
    record = {"reader": reader, "index": index, "source": trial.source, "mutation": trial.mutation,
              "options": trial.options, **asdict(outcome),
              "reproduce": f"python scripts/fuzz_readers.py --reproduce {reader}:{index} --seed {fuzzer.seed}"}
    del record["names_file"]
    return record


def defect_classes(defects: list[dict]) -> list[tuple[tuple[str, str, str, str], int, dict]]:
    """Defects grouped by (reader, outcome, exception type, place): one line each in the report."""
    groups: dict[tuple[str, str, str, str], list[dict]] = {}
    for defect in defects:
        key = (defect["reader"], defect["kind"], defect["error_type"], defect["where"])
        groups.setdefault(key, []).append(defect)
    return [(key, len(group), group[0]) for key, group in sorted(groups.items(), key=lambda g: -len(g[1]))]


def format_report(record: dict) -> str:
    width = max(len(o) for o in OUTCOMES)
    lines = [f"{'reader':<8} {'trials':>7} " + " ".join(f"{o:>{width}}" for o in OUTCOMES)]
    for reader, counts in record["counts"].items():
        lines.append(f"{reader:<8} {sum(counts.values()):>7} " + " ".join(f"{counts[o]:>{width}}" for o in OUTCOMES))
    lines.append(f"defects: {len(record['defects'])}; named errors that name no file: "
                 f"{sum(record['named_errors_without_file'].values())}; {record['elapsed_s']} s")
    for (reader, kind, error_type, where), count, example in defect_classes(record["defects"]):
        lines.append(f"  {count:>5} x {reader} {kind} {error_type} at {where}: {example['message'][:120]}")
        lines.append(f"          e.g. {example['reproduce']}   ({example['source']}: {example['mutation'][:100]})")
    return "\n".join(lines)


def reproduce(spec: str, seed: int, shared: Path, folder: Path) -> None:
    """Regenerate one trial, save its input, and read it in this process so the traceback shows."""
    reader, index = spec.split(":")
    fuzzer = Fuzzer(seed, shared, (reader,))
    trial = fuzzer.trial(reader, int(index))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fuzz-{reader}-{seed}-{index}{SUFFIX[reader]}"
    path.write_bytes(trial.data)
    print(f"{path}: from {trial.source}, {trial.mutation}; options {trial.options}")
    read(trial, path)
    print("loaded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials per reader")
    parser.add_argument("--reader", choices=["onnx", "vnnlib", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per trial")
    parser.add_argument("--memory-limit-mb", type=int, default=2048)
    parser.add_argument("--shared", type=Path, default=SHARED, help="the benchmarks folder")
    parser.add_argument("--size-scale", type=float, default=SIZE_SCALE,
                        help="bytes: a file this big is drawn half as often as a tiny one")
    parser.add_argument("--json", type=Path, help="write counts and defects here")
    parser.add_argument("--reproduce", metavar="READER:INDEX", help="rerun one trial in this process")
    parser.add_argument("--out", type=Path, default=Path("."), help="where --reproduce saves its input")
    args = parser.parse_args(argv)
    if args.reproduce:
        reproduce(args.reproduce, args.seed, args.shared, args.out)
        return 0
    readers = READERS if args.reader == "both" else (args.reader,)
    record = run_campaign(readers, args.trials, args.seed, args.workers, args.time_limit,
                          args.memory_limit_mb << 20, args.shared, args.size_scale, progress=True)
    print(format_report(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 1 if record["defects"] else 0


if __name__ == "__main__":
    sys.exit(main())

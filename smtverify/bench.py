"""Running a competition `instances.csv`: every instance decided, written to the results file as
soon as it is known (an interrupted run keeps what it found), and compared with the expected verdict."""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .errors import SmtVerifyError
from .onnx_import import load_onnx
from .verdict import Result, Verdict
from .verify import Settings, Verifier
from .vnnlib import read_vnnlib

FIELDS = ["onnx", "vnnlib", "timeout_s", "expected", "verdict", "correct", "seconds", "detail"]


@dataclass
class Instance:
    onnx: Path
    vnnlib: Path
    timeout: float
    expected: str | None


@dataclass
class Outcome:
    instance: Instance
    verdict: str          # the competition's word
    seconds: float
    detail: str

    @property
    def solved(self) -> bool:
        return self.verdict in ("sat", "unsat")

    @property
    def wrong(self) -> bool:
        return self.solved and self.instance.expected in ("sat", "unsat") and self.verdict != self.instance.expected


def read_instances(path: str | Path) -> list[Instance]:
    """Rows of an instances.csv (with or without a header), paths relative to the csv."""
    path = Path(path)
    base = path.parent
    with open(path, newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and not r[0].startswith("#")]
    if rows and rows[0][0] == "onnx":
        rows = rows[1:]
    return [Instance(base / r[0], base / r[1], float(r[2]), (r[3].strip() or None) if len(r) > 3 else None)
            for r in rows]


def decide(instance: Instance, timeout: float, settings: Settings | None = None) -> tuple[Result | None, str]:
    """One instance: the result, or None and the error message for bad input."""
    try:
        network = load_onnx(instance.onnx)
        prop = read_vnnlib(instance.vnnlib, network.n_inputs, network.n_outputs)
        chosen = Settings(**{**(settings or Settings()).__dict__, "timeout": timeout})
        return Verifier(network, chosen).verify(prop), ""
    except SmtVerifyError as error:
        return None, str(error)


def run(instances: list[Instance], timeout_scale: float = 1.0, out: str | Path | None = None,
        settings: Settings | None = None, report: Callable[[Outcome, int], None] | None = None) -> Iterator[Outcome]:
    """Decide each instance in turn, appending a row to `out` as each finishes."""
    writer = None
    handle = open(out, "w", newline="") if out else None
    try:
        if handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
        for index, instance in enumerate(instances):
            start = time.perf_counter()
            result, error = decide(instance, instance.timeout * timeout_scale, settings)
            verdict = result.verdict.vnncomp if result else Verdict.ERROR.vnncomp
            outcome = Outcome(instance, verdict, time.perf_counter() - start, error or _detail(result))
            if writer:
                writer.writerow({"onnx": str(instance.onnx), "vnnlib": str(instance.vnnlib),
                                 "timeout_s": instance.timeout, "expected": instance.expected or "",
                                 "verdict": verdict, "correct": "" if not instance.expected or not outcome.solved
                                 else str(not outcome.wrong).lower(), "seconds": f"{outcome.seconds:.3f}",
                                 "detail": outcome.detail})
                handle.flush()
            if report:
                report(outcome, index)
            yield outcome
    finally:
        if handle:
            handle.close()


def _detail(result: Result) -> str:
    stats = result.stats
    return f"leaves={stats.get('leaves', 0)} z3={stats.get('z3_calls', 0)}"

"""Running a competition `instances.csv`: every instance decided, journalled in the run folder as
soon as it is known (an interrupted run keeps what it found, a resumed one skips it), and compared
with the expected verdict. Each counterexample is saved in the folder in the competition's format."""
from __future__ import annotations

import csv
import math
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .confirm import write_vnncomp_result
from .errors import InputFileError, SmtVerifyError
from .onnx_import import load_onnx
from .run_folder import RESULTS, RunFolder
from .verdict import Result, Verdict
from .verify import Settings, Verifier
from .verify.progress import Listener
from .vnnlib import read_vnnlib

FIELDS = ["onnx", "vnnlib", "timeout_s", "expected", "verdict", "correct", "seconds", "detail", "counterexample"]


@dataclass
class Instance:
    onnx: Path
    vnnlib: Path
    timeout: float
    expected: str | None


@dataclass
class Failure:
    """Why an instance gave no verdict: bad input (a named error), or a defect of smtverify's own
    (any other exception), with its traceback for --debug."""

    message: str
    internal: bool
    traceback: str = ""


@dataclass
class Outcome:
    instance: Instance
    verdict: str          # the competition's word
    seconds: float
    detail: str
    failure: Failure | None = None
    result: Result | None = None

    @property
    def solved(self) -> bool:
        return self.verdict in ("sat", "unsat")

    @property
    def wrong(self) -> bool:
        return self.solved and self.instance.expected in ("sat", "unsat") and self.verdict != self.instance.expected


EXPECTED_WORDS = {"sat", "unsat", "unknown", "timeout", "error"}


def read_instances(path: str | Path) -> list[Instance]:
    """Rows of an instances.csv (with or without a header), paths relative to the csv. Every row is
    checked before any instance runs, so a typo on line 90 does not surface after an hour of work."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("no such instances file", file=path)
    try:
        with open(path, newline="") as handle:
            rows = [(number, r) for number, r in enumerate(csv.reader(handle), 1) if r and not r[0].startswith("#")]
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputFileError(f"not a readable csv: {error}", file=path) from None
    if rows and rows[0][1][0].strip() == "onnx":
        _check_header(path, rows[0][1])
        rows = rows[1:]
    if not rows:
        raise InputFileError("lists no instances", file=path)
    return [_instance(path, number, row) for number, row in rows]


def _check_header(path: Path, header: list[str]) -> None:
    names = [h.strip() for h in header]
    if names[:3] != ["onnx", "vnnlib", "timeout_s"] or (len(names) > 3 and names[3] != "expected"):
        raise InputFileError(f"the header {','.join(names)} is not onnx,vnnlib,timeout_s[,expected]",
                             file=path, line=1)


def _instance(path: Path, number: int, row: list[str]) -> Instance:
    """One row, checked: two files that exist, a positive timeout, a known expected verdict."""
    if len(row) < 3:
        raise InputFileError(f"a row needs onnx,vnnlib,timeout_s[,expected]; this one has {len(row)} "
                             "column(s)", file=path, line=number)
    onnx_file, vnnlib_file = path.parent / row[0].strip(), path.parent / row[1].strip()
    for column, file in (("onnx", onnx_file), ("vnnlib", vnnlib_file)):
        if not file.is_file():
            raise InputFileError(f"{file} does not exist", file=path, line=number, field=column)
    try:
        timeout = float(row[2])
    except ValueError:
        raise InputFileError(f"'{row[2]}' is not a number", file=path, line=number, field="timeout_s") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise InputFileError(f"the timeout must be positive and finite, not {row[2]}", file=path, line=number,
                             field="timeout_s")
    expected = row[3].strip().lower() if len(row) > 3 else ""
    if expected and expected not in EXPECTED_WORDS:
        raise InputFileError(f"'{row[3]}' is not one of {sorted(EXPECTED_WORDS)}", file=path, line=number,
                             field="expected")
    return Instance(onnx_file, vnnlib_file, timeout, expected or None)


def decide(instance: Instance, timeout: float, settings: Settings | None = None,
           progress: Listener | None = None) -> tuple[Result | None, Failure | None]:
    """One instance: (the result, None), or (None, why it failed). Nothing escapes but an
    interrupt, so one bad instance cannot end a run over a whole suite. The timeout covers reading
    the files too, as the competition's does. `progress` listens to the decision (Verifier.verify)."""
    start = time.perf_counter()
    try:
        network = load_onnx(instance.onnx)
        prop = read_vnnlib(instance.vnnlib, network.n_inputs, network.n_outputs)
        left = max(0.0, timeout - (time.perf_counter() - start))
        return Verifier(network, settings or Settings()).verify(prop, timeout=left, progress=progress), None
    except SmtVerifyError as error:
        return None, Failure(str(error), internal=False)
    except Exception as error:     # a defect of smtverify's (MemoryError too): reported, never hidden
        return None, Failure(f"internal error: {type(error).__name__}: {error}", internal=True,
                             traceback=traceback.format_exc())




def run(instances: list[Instance], timeout_scale: float = 1.0, folder: RunFolder | None = None,
        settings: Settings | None = None, report: Callable[[Outcome, int], None] | None = None) -> Iterator[Outcome]:
    """Decide each instance in turn. In a run folder, each is journalled and appended to
    results.csv as it finishes, its counterexample saved beside them; instances the folder's
    journal already holds (a resumed run) are not decided again, and come back as they were."""
    earlier = {int(r["row"]): r for r in folder.journal.records("instance")} if folder else {}
    for index, instance in enumerate(instances):
        if index + 1 in earlier:
            yield _earlier_outcome(instance, earlier[index + 1])
            continue
        start = time.perf_counter()
        result, failure = decide(instance, instance.timeout * timeout_scale, settings)
        verdict = result.verdict.vnncomp if result else Verdict.ERROR.vnncomp
        outcome = Outcome(instance, verdict, time.perf_counter() - start,
                          failure.message if failure else _detail(result), failure, result)
        if folder:
            _write_row(folder, index, outcome)
        if report:
            report(outcome, index)
        yield outcome


def _write_row(folder: RunFolder, index: int, outcome: Outcome) -> None:
    """The counterexample first, then the journal's line and the table's row that name it."""
    instance = outcome.instance
    saved = _save_counterexample(folder.path, index, outcome)
    row = {"onnx": str(instance.onnx.resolve()), "vnnlib": str(instance.vnnlib.resolve()), "timeout_s": instance.timeout,
           "expected": instance.expected or "", "verdict": outcome.verdict,
           "correct": "" if not instance.expected or not outcome.solved else str(not outcome.wrong).lower(),
           "seconds": f"{outcome.seconds:.3f}", "detail": outcome.detail, "counterexample": saved.name if saved else ""}
    folder.journal.append("instance", {"row": index + 1, **row})
    results = folder.path / RESULTS
    new = not results.exists()
    with open(results, "a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _earlier_outcome(instance: Instance, record: dict) -> Outcome:
    """An instance a resumed run's journal holds: its verdict and time as they were."""
    return Outcome(instance, record["verdict"], float(record["seconds"]), record["detail"])


def counterexample_path(folder: Path, index: int, instance: Instance) -> Path:
    """In the run folder, named by its row, network and property, so that a suite repeating a
    network or a property keeps every counterexample."""
    return folder / f"{index + 1:04d}.{instance.onnx.stem}.{instance.vnnlib.stem}.counterexample"


def _save_counterexample(folder: Path, index: int, outcome: Outcome) -> Path | None:
    if outcome.result is None or outcome.result.counterexample is None:
        return None
    path = counterexample_path(folder, index, outcome.instance)
    write_vnncomp_result(path, outcome.verdict, outcome.result.counterexample)
    return path


def _detail(result: Result) -> str:
    stats = result.stats
    return f"leaves={stats.get('leaves', 0)} z3={stats.get('z3_calls', 0)}"

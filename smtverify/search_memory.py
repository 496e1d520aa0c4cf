"""What a search's run folder remembers, so that a resumed search does not redo finished work.

A DLV search is deterministic: the same network, input and settings search the same grids in the
same order, each grid's points in the same order. So the journal records, under a key naming the
grid (round, path, family, span, features):
- each grid that ended ("grid"): its verdict, counts and most promising points, so a resumed run
  takes the grid's result instead of searching it again;
- checkpoints of the grid in progress ("checkpoint", every few seconds): points evaluated,
  examples found and the most promising points so far, so a resumed run skips those points.
Examples found before the interruption are the example files on disk (written whole as found,
each then journalled). Those journalled before a checkpoint or end of their grid are taken up by
the resumed run when it reaches that grid; later ones lie beyond the point the resumed run goes
on from, so their files are removed (a "rewind" record says so) and the resumed run finds and
writes them again, under the same numbers.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from .export import read_found
from .grid import GridCheckpoint, GridReport
from .manipulations import Manipulation, PixelManipulation
from .run_folder import Journal, RunFolder, sha256_of_array, sha256_of_file
from .search_report import Found
from .verdict import Verdict

CHECKPOINT_SECONDS = 2.0


def grid_key(round_: int, path: int, manipulation: Manipulation, dims: list[int]) -> str:
    """Names a grid of a search: the same key in a resumed run is the same grid."""
    span = float(np.asarray(manipulation.span).reshape(-1)[0]) if isinstance(manipulation, PixelManipulation) \
        else float(manipulation.span)
    return f"{round_}:{path}:{type(manipulation).__name__}:{span!r}:{','.join(map(str, dims))}"


class SearchMemory:
    """The journal of one search's run folder, read when resuming and written as the search goes."""

    def __init__(self, journal: Journal, example_files: list[Path], every: float = CHECKPOINT_SECONDS) -> None:
        self.journal, self.every = journal, every
        records = journal.records()
        self.grids = {r["key"]: r for r in records if r.get("kind") == "grid"}
        self.checkpoints = {r["key"]: r for r in records if r.get("kind") == "checkpoint"}
        owners = _example_owners(records)
        for path in example_files[len(owners):]:
            for stale in path.parent.glob(f"{path.stem}.*"):
                stale.unlink()
        if len(example_files) > len(owners):
            journal.append("rewind", {"examples": len(owners)})
        self.kept = min(len(owners), len(example_files))
        self.by_grid: dict[str, list[Found]] = {}
        for key, path in zip(owners, example_files):
            self.by_grid.setdefault(key, []).append(read_found(path))
        self.known = {f.example.input.tobytes() for found in self.by_grid.values() for f in found}

    def examples_of(self, key: str) -> list[Found]:
        """The examples the earlier run found in this grid (before its last checkpoint): the resumed
        run takes them up when it reaches the grid, so its rounds end where an uninterrupted run's do."""
        return self.by_grid.get(key, [])

    def is_known(self, x: np.ndarray) -> bool:
        """Whether the earlier run wrote this very point: a grid searched again from its start (its
        checkpoint unusable) finds it again, and must not write it twice."""
        return np.asarray(x, np.float32).tobytes() in self.known

    def finished(self, key: str) -> GridReport | None:
        """A grid the earlier run searched to its end, as a report without its examples (those are
        `examples_of(key)`)."""
        record = self.grids.get(key)
        if record is None:
            return None
        best = GridCheckpoint.from_record(record)
        return GridReport(Verdict(record["verdict"]), [], int(record["label"]), int(record["grid_size"]),
                          best.evaluated, 0.0, 0.0, f"{record['evaluator']} (earlier run)", tuple(record["reached"]),
                          reason=record["reason"], best_c=best.best_c, best_margins=best.best_margins,
                          examples_found=best.found, carried=best.found,
                          earlier_points=best.evaluated)

    def checkpoint(self, key: str) -> GridCheckpoint | None:
        record = self.checkpoints.get(key)
        return None if record is None else GridCheckpoint.from_record(record)

    def saver(self, key: str) -> Callable[[GridCheckpoint], None]:
        """Journals the grid's state after its first chunk, then at most every few seconds (a line
        is small, a second of work is not)."""
        saved_at = [None]

        def save(state: GridCheckpoint) -> None:
            now = time.monotonic()
            if saved_at[0] is None or now - saved_at[0] >= self.every:
                saved_at[0] = now
                self.journal.append("checkpoint", {"key": key, **state.as_record()})
        return save

    def record(self, key: str, report: GridReport) -> None:
        """A grid that ended (safe, or holding an example); one a budget cut short has only its checkpoints."""
        if report.verdict not in (Verdict.SAFE_ON_GRID, Verdict.UNSAFE):
            return
        state = GridCheckpoint(report.points_evaluated, report.examples_found, report.best_c, report.best_margins, 0)
        self.journal.append("grid", {"key": key, "verdict": report.verdict.value, "label": report.label,
                                     "grid_size": report.grid_size, "evaluator": report.evaluator,
                                     "reached": list(report.reached), "reason": report.reason, **state.as_record()})


def _example_owners(records: list[dict]) -> list[str]:
    """The grid of each example written before its grid's last checkpoint or end, in the order they
    were written (and numbered); examples written after it are not owned, and are rewound."""
    owners: list[str] = []
    pending = 0
    for record in records:
        kind = record.get("kind")
        if kind == "example":
            pending += 1
        elif kind == "rewind":
            del owners[int(record["examples"]):]
            pending = 0
        elif kind in ("checkpoint", "grid"):
            owners += [record["key"]] * pending
            pending = 0
    return owners


def search_folder(path: str | Path, network, x: np.ndarray, label: int | None, settings, dims: list[int] | None,
                  input_name: str, resume: bool = False, force: bool = False) -> RunFolder:
    """A search's run folder: a new one, a forced one (its run's files cleared) or the one it resumes,
    which must be of the same model, input, label and settings (the timeouts may differ)."""
    recorded = {k: v for k, v in vars(settings).items() if k not in ("timeout", "lift_timeout", "hidden")}
    recorded["hidden"] = settings.hidden and vars(settings.hidden)
    identity = {"model": network.path, "model_sha256": sha256_of_file(network.path), "input": input_name,
                "input_sha256": sha256_of_array(x), "label": label, "pixels": dims, "settings": recorded}
    return RunFolder.prepare(path, "search", identity, resume, force)

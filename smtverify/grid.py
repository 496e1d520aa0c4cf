"""Exhaustive search of a manipulation grid at the input layer (METHOD 3 and 6).

Every grid point is evaluated, in vectorised chunks that are generated on the fly, so memory stays
flat however large the grid. Points come in order of closeness to the original: by the number k
of moved parameters, then by the ring r = max |c| (both exact across chunks), then, within a chunk,
by L2 distance; so the first example found is one of the fewest changed dimensions.

The fast evaluators run in float32. Every point they find misclassified, or whose margin is a near
tie, is re-run by onnxruntime (float32) and by the numpy executor in float32 and float64: only
onnxruntime's verdict makes an example, and a point the executors disagree on keeps the grid from
being called safe.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import chain, combinations, islice
from typing import Any, Callable, Iterator

import numpy as np

from .budget import Deadline, OutOfTime
from .fast_eval import Evaluator, choose_evaluator
from .manipulations import Manipulation
from .network import Network
from .reference import OnnxRuntimeExecutor
from .runtime import one_blas_thread
from .verdict import Verdict

CHECK_BATCH = 256            # flagged points re-run together by the independent executors
SUBSETS_PER_BATCH = 1 << 14  # parameter subsets whose blocks are laid out at once
MAX_LEVEL_POINTS = 2 ** 62   # int64 counters; no budget reaches a level this large


# ----- the grid's order ------------------------------------------------------------------------
def _ladders(levels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """values[p, i]: parameter p's i-th nonzero admitted c by closeness; counts[p, r]: how many
    of them have |c| <= r."""
    rings = max((int(np.abs(level).max()) for level in levels), default=0)
    values = np.zeros((len(levels), max((len(level) - 1 for level in levels), default=0)), np.int64)
    counts = np.zeros((len(levels), rings + 1), np.int64)
    for p, level in enumerate(levels):
        values[p, :len(level) - 1] = level[1:]
        counts[p] = np.searchsorted(np.abs(level[1:]), np.arange(rings + 1), side="right")
    return values, counts


def _subset_batches(d: int, k: int) -> Iterator[np.ndarray]:
    """The k-subsets of d parameters, in batches (B, k): there can be far too many to hold."""
    subsets = combinations(range(d), k)
    while batch := list(islice(subsets, max(1, SUBSETS_PER_BATCH // k))):
        yield np.array(batch, np.int64).reshape(-1, k)


def _level(values: np.ndarray, counts: np.ndarray, k: int, r: int, chunk: int) -> Iterator[np.ndarray]:
    """The points that move exactly k parameters with max |c| = r, as c vectors (B, d).

    For a subset of k parameters, block j holds the points whose first parameter on ring r is the
    j-th: parameters before it stay inside ring r-1, those after it inside ring r. The blocks
    partition the level, so each point is generated once, with no filtering. Subsets whose
    parameters admit the same numbers of values (most, unless clipping differs) share their blocks'
    layout, so many small blocks cost one gather.
    """
    for subsets in _subset_batches(len(values), k):
        inner, outer = counts[subsets, r - 1], counts[subsets, r]
        if np.sum(np.prod(outer.astype(np.float64), axis=1)) >= MAX_LEVEL_POINTS:
            raise OverflowError(f"grid level k={k}, r={r} has more than 2^62 points")
        for pattern, group in _by_pattern(subsets, np.hstack([inner, outer])):
            for j in range(k):
                ranges = [np.arange(pattern[i]) if i < j else np.arange(pattern[i], pattern[k + i]) if i == j
                          else np.arange(pattern[k + i]) for i in range(k)]
                for index in _product(ranges, max(1, chunk // len(group))):
                    per = max(1, chunk // len(index))
                    for start in range(0, len(group), per):
                        yield _points(values, group[start:start + per], index)


def _by_pattern(subsets: np.ndarray, patterns: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(pattern, subsets having it): usually one pattern, found without sorting."""
    if np.all(patterns == patterns[0]):
        yield patterns[0], subsets
        return
    unique, inverse = np.unique(patterns, axis=0, return_inverse=True)
    for u, pattern in enumerate(unique):
        yield pattern, subsets[inverse.reshape(-1) == u]


def _product(lists: list[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """The Cartesian product of `lists` in C order, as rows, at most `chunk` at a time: the
    fastest-varying lists are laid out once and repeated under each combination of the others."""
    sizes = [len(values) for values in lists]
    if 0 in sizes:
        return
    split, inner = len(lists), 1
    while split and inner * sizes[split - 1] <= chunk:
        split -= 1
        inner *= sizes[split]
    tails = np.stack([g.reshape(-1) for g in np.meshgrid(*lists[split:], indexing="ij")], axis=1) \
        if split < len(lists) else np.zeros((1, 0), np.int64)
    n_outer = int(np.prod(sizes[:split], dtype=np.int64))
    per = max(1, chunk // inner)
    for start in range(0, n_outer, per):
        if split:
            index = np.unravel_index(np.arange(start, min(start + per, n_outer)), sizes[:split])
            heads = np.stack([values[i] for values, i in zip(lists, index)], axis=1)
        else:
            heads = np.zeros((1, 0), np.int64)
        yield np.hstack([np.repeat(heads, inner, axis=0), np.tile(tails, (len(heads), 1))])


def _points(values: np.ndarray, subsets: np.ndarray, index: np.ndarray) -> np.ndarray:
    """c vectors: for each subset (G, k) and each row of value positions (n, k), the subset's
    parameters take those admitted values and the others stay 0."""
    n = len(index)
    columns = np.zeros((len(values), len(subsets) * n), np.int32)     # c transposed: rows written whole
    rows = np.arange(len(subsets) * n).reshape(len(subsets), n)
    for params, positions in zip(subsets.T, index.T):
        if len(subsets) == 1:                                          # big blocks: a plain row copy
            columns[params[0]] = values[params[0], positions]
        else:
            columns[params[:, None], rows] = values[params[:, None], positions[None, :]]
    return columns.T


def _rechunk(pieces: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Pieces of at most `size` rows, small ones joined, as chunks of at most 2*size rows."""
    held: list[np.ndarray] = []
    count = 0
    for piece in pieces:
        if len(piece) >= size // 2:
            if held:
                yield np.concatenate(held)
                held, count = [], 0
            yield piece
            continue
        held.append(piece)
        count += len(piece)
        if count >= size:
            yield np.concatenate(held)
            held, count = [], 0
    if held:
        yield np.concatenate(held)


def grid_points(levels: list[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    """Every grid point once, as int32 c vectors (B, d) in chunks: the original (c = 0) first,
    then by the number of moved parameters k, then by ring r = max |c|."""
    values, counts = _ladders(levels)
    d, rings = counts.shape[0], counts.shape[1] - 1
    levels_in_order = (_level(values, counts, k, r, chunk) for k in range(1, d + 1) for r in range(1, rings + 1))
    return _rechunk(chain([np.zeros((1, d), np.int32)], chain.from_iterable(levels_in_order)), chunk)


# ----- examples and the report ------------------------------------------------------------------
@dataclass
class Example:
    """A grid point the network misclassifies, as confirmed by the independent executor."""

    input: np.ndarray            # float32, the network's input layout
    c: np.ndarray                # the manipulation's parameter vector
    changed_dims: np.ndarray     # flat input indices whose value differs from the original
    original_class: int
    new_class: int
    logits: np.ndarray           # the confirming executor's output
    l0: int
    l1: float
    l2: float
    linf: float
    confirmed_by: str = "onnxruntime (float32)"

    @classmethod
    def of(cls, x: np.ndarray, original: np.ndarray, c: np.ndarray, label: int, logits: np.ndarray) -> "Example":
        """The example x of `original`'s label, with its distances to the original."""
        moved = x.reshape(-1).astype(np.float64) - original.reshape(-1).astype(np.float64)
        changed, size = np.flatnonzero(moved), np.abs(moved)
        return cls(x, c, changed, label, int(np.argmax(logits)), logits, len(changed), float(size.sum()),
                   float(np.sqrt(np.sum(size ** 2))), float(size.max(initial=0)))

    def summary(self) -> dict[str, Any]:
        return {"c": self.c.tolist(), "changed_dims": self.changed_dims.tolist(), "original_class": self.original_class,
                "new_class": self.new_class, "logits": self.logits.tolist(), "l0": self.l0, "l1": self.l1,
                "l2": self.l2, "linf": self.linf, "confirmed_by": self.confirmed_by}


@dataclass
class GridReport:
    """How the search ended, how far it got and how fast."""

    verdict: Verdict
    examples: list[Example]
    label: int
    grid_size: int
    points_evaluated: int
    seconds: float               # in all, setup included
    search_seconds: float        # evaluating and checking points
    evaluator: str
    reached: tuple[int, int]     # (moved parameters k, ring r) of the last point evaluated
    near_ties: int = 0           # points re-run because their margin was a near tie
    unconfirmed: int = 0         # float32 hits onnxruntime classifies as the label: dropped
    disputed: int = 0            # label for onnxruntime, not for numpy float32 or float64
    reason: str = ""
    best_c: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))   # most promising points,
    best_margins: np.ndarray = field(default_factory=lambda: np.zeros(0))            # smallest margin first
    examples_found: int = 0      # confirmed examples, `examples` holding the first of them (at most the cap)
    carried: int = 0             # of them, found before the checkpoint this search went on from
    earlier_points: int = 0      # of points_evaluated, those an earlier run evaluated (resumed)

    @property
    def points_per_second(self) -> float:
        return (self.points_evaluated - self.earlier_points) / self.search_seconds if self.search_seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "label": self.label, "grid_size": self.grid_size,
                "points_evaluated": self.points_evaluated, "seconds": round(self.seconds, 4),
                "points_per_second": round(self.points_per_second, 1), "evaluator": self.evaluator,
                "reached": list(self.reached), "near_ties": self.near_ties, "unconfirmed": self.unconfirmed,
                "disputed": self.disputed, "reason": self.reason, "examples_found": self.examples_found,
                "examples": [example.summary() for example in self.examples]}


def _ring(c: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(c)), int(np.abs(c).max(initial=0))


@dataclass
class _Checker:
    """Re-runs flagged points with the independent executors and keeps the confirmed examples: the
    first `max_examples` of them as Examples, handed on as found; the rest only counted."""

    network: Network
    manipulation: Manipulation
    label: int
    reference: OnnxRuntimeExecutor
    on_example: Callable[[Example], None] | None = None
    max_examples: int | None = None
    deadline: Deadline = Deadline()
    examples: list[Example] = field(default_factory=list)
    found: int = 0
    near_ties: int = 0
    unconfirmed: int = 0
    disputed: int = 0

    def check(self, c: np.ndarray, gap: np.ndarray, first_only: bool) -> int:
        """Points in order of (k, r, L2 distance); stops at the first example when `first_only`.
        Returns how many points were left unchecked because the deadline passed."""
        inputs = self.manipulation.apply(c)
        moved = inputs.reshape(len(c), -1).astype(np.float64) - self.manipulation.original.reshape(1, -1)
        l2 = np.sqrt(np.sum(moved ** 2, axis=1))
        order = np.lexsort((l2, np.abs(c).max(axis=1), np.count_nonzero(c, axis=1)))
        for start in range(0, len(order), CHECK_BATCH):
            if self.deadline.passed():
                return len(order) - start
            batch = order[start:start + CHECK_BATCH]
            self.near_ties += int(np.sum(gap[batch] >= 0))
            logits = self.reference.logits(inputs[batch])
            confirmed = np.argmax(logits, axis=1) != self.label
            others = [self.network.classify(inputs[batch], dtype) != self.label for dtype in (np.float32, np.float64)]
            self.disputed += int(np.sum(~confirmed & (others[0] | others[1])))
            self.unconfirmed += int(np.sum(~confirmed & (gap[batch] < 0)))
            hits = np.flatnonzero(confirmed)[:1 if first_only else None]
            self.found += len(hits)
            room = len(hits) if self.max_examples is None else max(0, self.max_examples - len(self.examples))
            for i in hits[:room]:
                self._keep(Example.of(inputs[batch[i]], self.manipulation.original, c[batch[i]], self.label, logits[i]))
            if first_only and self.found:
                break
        return 0

    def _keep(self, example: Example) -> None:
        self.examples.append(example)
        if self.on_example is not None:
            self.on_example(example)


@dataclass
class _Best:
    """The `keep` points of smallest margin seen so far: DLV's most promising points for its next round."""

    keep: int
    c: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))
    margins: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def offer(self, c: np.ndarray, gap: np.ndarray) -> None:
        if not self.keep or (len(self.margins) == self.keep and gap.min() >= self.margins[-1]):
            return
        if len(gap) > self.keep:
            chosen = np.argpartition(gap, self.keep - 1)[:self.keep]
            c, gap = c[chosen], gap[chosen]
        c = np.concatenate([self.c.reshape(-1, c.shape[1]), c])
        gap = np.concatenate([self.margins, gap.astype(np.float64)])
        order = np.lexsort((np.count_nonzero(c, axis=1), gap))[:self.keep]    # ties: fewer moved parameters
        self.c, self.margins = c[order], gap[order]


def _gap(logits: np.ndarray, label: int) -> tuple[np.ndarray, np.ndarray]:
    """The label's logit minus the best other one (negative: misclassified), and the largest |logit|,
    the scale of float32 rounding. Column by column: the fast evaluators return logits as a
    transposed view, whose columns are contiguous."""
    best = np.full(len(logits), -np.inf, logits.dtype)
    scale = np.abs(logits[:, label])
    for j in range(logits.shape[1]):
        if j != label:
            np.maximum(best, logits[:, j], out=best)
            np.maximum(scale, np.abs(logits[:, j]), out=scale)
    return logits[:, label] - best, scale


def _paced(chunks: Iterator[np.ndarray], deadline: Deadline) -> Iterator[np.ndarray]:
    """The chunks, whole while they fit in the time left at the rate measured so far; one that does
    not is cut into pieces that do, so the last piece before the deadline ends near it. Whole chunks
    keep the order of checks (by L2 within a chunk) independent of the machine's speed until the
    deadline is near. The consumer handles each piece before asking for the next; every point still
    comes once, in order."""
    if math.isinf(deadline.at):
        yield from chunks
        return
    start, done = time.perf_counter(), 0
    for chunk in chunks:
        while len(chunk):
            rate = done / max(time.perf_counter() - start, 1e-9)
            fit = len(chunk) if not done else max(1, int(min(rate * deadline.left(), len(chunk))))
            piece, chunk = chunk[:fit], chunk[fit:]
            done += len(piece)
            yield piece


@dataclass
class GridCheckpoint:
    """How far a grid's evaluation got, after a whole chunk: enough for a later process (a resumed
    run) to go on from there. The points' order depends on the evaluator's chunk size, so a
    checkpoint is used only with the same one; the grid is searched from its start otherwise."""

    evaluated: int
    found: int
    best_c: np.ndarray
    best_margins: np.ndarray
    chunk: int
    evaluator: str = ""          # whose chunks: a resumed search asks for the same evaluator

    def as_record(self) -> dict[str, Any]:
        return {"evaluated": self.evaluated, "found": self.found, "best_c": self.best_c.tolist(),
                "best_margins": self.best_margins.tolist(), "chunk": self.chunk, "evaluator": self.evaluator}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "GridCheckpoint":
        best_c = np.asarray(record["best_c"], np.int32)
        return cls(int(record["evaluated"]), int(record["found"]), best_c.reshape(len(best_c), -1),
                   np.asarray(record["best_margins"], np.float64), int(record["chunk"]), record.get("evaluator", ""))


@dataclass
class _Progress:
    """How far the evaluation got, and which budget stopped it."""

    evaluated: int = 0
    reached: tuple[int, int] = (0, 0)
    ran_out: str = ""
    search_seconds: float = 0.0
    listener: Callable[[int, int], None] | None = None   # (points evaluated, examples found), per chunk
    checkpoint: Callable[[GridCheckpoint], None] | None = None   # the state after each chunk


def _skipping(chunks: Iterator[np.ndarray], count: int) -> Iterator[np.ndarray]:
    """The chunks without their first `count` points (those a checkpoint says were evaluated)."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _choose(network: Network, manipulation: Manipulation, kind: str, resume: GridCheckpoint | None,
            points: int | None, deadline: Deadline) -> Evaluator:
    """The evaluator asked for; going on from a checkpoint, the checkpoint's own (the points' order
    is its chunks'), or the best one where that no longer applies in the time left."""
    if kind == "auto" and resume is not None and resume.evaluator:
        try:
            return choose_evaluator(network, manipulation, resume.evaluator, points, deadline)
        except ValueError:
            pass
    return choose_evaluator(network, manipulation, kind, points, deadline)


def _resume(resume: GridCheckpoint | None, chosen: Evaluator, checker: "_Checker", best: "_Best",
            progress: _Progress) -> int:
    """Take up a checkpoint made with the same chunk size: its counts and most promising points.
    Returns how many points to skip."""
    if resume is None or resume.chunk != chosen.chunk_size:
        return 0
    progress.evaluated, checker.found = resume.evaluated, resume.found
    if best.keep and len(resume.best_margins):
        best.c, best.margins = resume.best_c, resume.best_margins
    return resume.evaluated


def _evaluate(chosen: Evaluator, manipulation: Manipulation, label: int, checker: _Checker, best: _Best,
              progress: _Progress, max_points: int | None, collect_all: bool, tie_tolerance: float,
              skip: int = 0) -> None:
    """The grid loop: chunks nearest first (after the `skip` points a checkpoint covers), each
    evaluated, offered to `best` and its flagged points checked, until an example (unless
    `collect_all`), the grid's end or a budget."""
    start = time.perf_counter()
    points = _skipping(grid_points(manipulation.levels, chosen.chunk_size), skip)
    for c in _paced(points, checker.deadline):
        if max_points is not None and len(c) > max_points - progress.evaluated:
            c = c[:max_points - progress.evaluated]       # the budget ends in this chunk (or ended before it)
            progress.ran_out = "the point budget ran out"
            if len(c) == 0:
                break
        if checker.deadline.passed():
            progress.ran_out = "the timeout ran out"
            break
        gap, scale = _gap(chosen.logits(c), label)
        flagged = gap < tie_tolerance * np.maximum(1.0, scale)
        best.offer(c, gap)
        unchecked = checker.check(c[flagged], gap[flagged], first_only=not collect_all) if flagged.any() else 0
        progress.evaluated += len(c) - unchecked
        progress.reached = _ring(c[-1])
        if progress.listener is not None:
            progress.listener(progress.evaluated, checker.found)
        if progress.checkpoint is not None and not unchecked:
            progress.checkpoint(GridCheckpoint(progress.evaluated, checker.found, best.c, best.margins,
                                               chosen.chunk_size, chosen.name))
        if unchecked:
            progress.ran_out = "the timeout ran out while misclassified points were being confirmed"
            break
        if checker.found and not collect_all:
            break
    progress.search_seconds = time.perf_counter() - start


def search_grid(network: Network, manipulation: Manipulation, label: int | None = None, *,
                collect_all: bool = False, max_points: int | None = None, max_seconds: float | None = None,
                evaluator: str = "auto", tie_tolerance: float = 1e-5,
                reference: OnnxRuntimeExecutor | None = None, keep_best: int = 0,
                on_example: Callable[[Example], None] | None = None,
                max_examples: int | None = None, on_progress: Callable[[int, int], None] | None = None,
                resume: GridCheckpoint | None = None, on_checkpoint: Callable[[GridCheckpoint], None] | None = None
                ) -> GridReport:
    """Evaluate the grid until the first confirmed example (or all of them with `collect_all`) or
    a budget runs out.

    `label` defaults to onnxruntime's class of the original. A margin below `tie_tolerance` times the
    largest |logit| (at least 1) is a near tie, re-checked like a misclassification: the float32
    evaluators stay within 1e-6 of that scale of onnxruntime on the bundled and verivital nets.
    `reference` reuses an onnxruntime session across searches of one network. `keep_best` keeps that
    many points of smallest margin (float32 evaluator) for DLV's next round; `on_example` sees each
    confirmed example as soon as it is found, so a caller can save it before the search ends.
    `max_seconds` covers everything, the evaluator's tables included; `max_examples` caps the
    examples kept (and handed on): later ones are only counted, so memory stays flat. `on_progress`
    hears (points evaluated, examples found) after every chunk, `on_checkpoint` the state a later
    process can go on from (`resume`: the points it covers are skipped, its counts taken up).
    """
    start = time.perf_counter()
    deadline = Deadline.after(max_seconds, start)
    reference = reference or OnnxRuntimeExecutor(network)
    label = int(reference.classify(manipulation.original)[0]) if label is None else int(label)
    checker = _Checker(network, manipulation, label, reference, on_example, max_examples, deadline)
    best, name, skip = _Best(keep_best), "none (no time left)", 0
    progress = _Progress(listener=on_progress, checkpoint=on_checkpoint)
    with one_blas_thread():
        try:
            deadline.check("choosing the evaluator")
            chosen = _choose(network, manipulation, evaluator, resume, max_points, deadline)
            name = chosen.name
            skip = _resume(resume, chosen, checker, best, progress)
            _evaluate(chosen, manipulation, label, checker, best, progress, max_points, collect_all, tie_tolerance,
                      skip)
        except OutOfTime as out:
            progress.ran_out = str(out)
    verdict, reason = _verdict(checker, progress, manipulation.grid_size)
    return GridReport(verdict, checker.examples, label, manipulation.grid_size, progress.evaluated,
                      time.perf_counter() - start, progress.search_seconds, name, progress.reached,
                      checker.near_ties, checker.unconfirmed, checker.disputed, reason, best.c, best.margins,
                      checker.found, resume.found if skip else 0, skip)


def _verdict(checker: _Checker, progress: _Progress, size: int) -> tuple[Verdict, str]:
    if checker.found:     # and if a budget cut the grid short, which one (more examples may lie beyond)
        return Verdict.UNSAFE, progress.ran_out and f"{progress.ran_out}: {progress.evaluated} of {size} grid points"
    if progress.evaluated < size:
        k, r = progress.reached
        last = f", the last with {k} moved parameters at ring {r}" if progress.evaluated else ""
        return Verdict.UNKNOWN, (f"{progress.ran_out or 'the budget ran out'}: {progress.evaluated} of {size} grid "
                                 f"points evaluated{last}")
    if checker.disputed:
        return Verdict.UNKNOWN, (f"{checker.disputed} grid points are classified as the label by onnxruntime "
                                 "but not by the numpy executor in float32 or float64")
    return Verdict.SAFE_ON_GRID, ""

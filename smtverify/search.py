"""DLV's search for adversarial examples at the input layer: rounds of exhaustive grid searches (METHOD 3, 6).

A round searches the grid of the chosen features around each kept point. When every grid of the
round is safe, the next features (by the heuristic, at the kept point, excluding those already
moved) are searched around the most promising points of the round: the `paths` grid points of
smallest margin (single-path keeps one, multi-path several). Every point searched is a point of
the grid over all the features moved so far, so each example is a grid point of that grid.

SAFE_ON_GRID says every grid searched (listed in the report) was evaluated in full and none holds
an example; with one round, that is the whole grid of the chosen features. Every example reported
was confirmed by onnxruntime (float32, inside the domain exactly) before it was reported or saved.

Budgets: one deadline (`settings.timeout`) for every phase, from feature selection to lifting; at
most `settings.max_examples` examples are kept, the rest counted, so memory does not grow with the
grid or with the number of examples it holds.

All grid searches go through `_Run.search`: the seam for searching a hidden layer (a manipulation
there, candidates back-mapped to inputs) and for lifting a safe grid to a continuous SAFE verdict
(the report keeps each safe grid's manipulation for that).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from . import confirm
from .budget import Deadline
from .errors import SmtVerifyError
from .features import HEURISTICS, select_features
from .grid import Example, GridReport, search_grid
from .hidden_search import HiddenLayerSearch, HiddenSettings
from .lattice import LatticeGrid, resolve, snap_span
from .lifting import lift
from .manipulations import (BrightnessManipulation, ContrastManipulation, Domain, Manipulation,
                            PixelManipulation)
from .network import Network
from .reference import OnnxRuntimeExecutor
from .search_memory import SearchMemory, grid_key
from .search_report import Found, GridRecord, RoundRecord, SearchReport
from .verdict import CONTINUOUS_GUARANTEE, GRID_GUARANTEE, HIDDEN_GRID_GUARANTEE, UNSAFE_GUARANTEE, Verdict
from .verify import Settings as VerifySettings, Verifier

FAMILIES = ("pixel", "brightness", "contrast")
GUARANTEES = {Verdict.SAFE: CONTINUOUS_GUARANTEE, Verdict.SAFE_ON_GRID: GRID_GUARANTEE, Verdict.UNSAFE: UNSAFE_GUARANTEE}

# A search's progress: (round, points done, grid size, examples found in the whole run).
GridListener = Callable[[int, int, int, int], None]


@dataclass
class SearchSettings:
    """Every knob of a DLV search, in one place."""

    family: str = "pixel"              # pixel | brightness | contrast
    span: float = 0.1                  # each step moves a value by this much
    steps: int = 2                     # c in -steps..steps
    features: int = 4                  # pixel family: features added per round
    heuristic: str = "activation"      # activation (DLV) | gradient (saliency)
    rounds: int = 1                    # feature budget: at most rounds * features features
    paths: int = 1                     # points kept per round: 1 single-path, more multi-path
    collect_all: bool = False          # every example of the round's grids, not only the first
    max_examples: int | None = 1000    # examples kept (reported, handed to on_found); later ones only counted
    max_points: int | None = None      # point budget over all rounds
    timeout: float | None = 60.0       # seconds for the whole search: every phase, lifting included
    domain: Domain = (0.0, 1.0)
    levels: int | None = None          # pixel grids on the lattice k/levels: None 8-bit if the input is, 0 none
    evaluator: str = "auto"
    lift: bool = False                 # prove the continuous region of each safe grid (lifting.py)
    lift_timeout: float = 30.0         # seconds for lifting, over all grids (within the timeout's time left)
    lift_cells: int = 64               # at most this many cells per grid when its hull is not proven
    layer: str | None = None           # search at this hidden layer (hidden_search.py); one round, pixel family
    hidden: HiddenSettings | None = None   # its knobs (default: HiddenSettings(layer))

    def check(self, network: Network) -> None:
        """Reject settings that cannot describe a search, naming the field."""
        if self.family not in FAMILIES:
            raise SmtVerifyError(f"unknown family '{self.family}'; use one of {', '.join(FAMILIES)}", field="family")
        if self.heuristic not in HEURISTICS:
            raise SmtVerifyError(f"unknown heuristic '{self.heuristic}'; use one of {', '.join(HEURISTICS)}",
                                 field="heuristic")
        if not self.span > 0:
            raise SmtVerifyError(f"span must be positive, not {self.span}", field="span")
        for name, least in (("steps", 1), ("features", 1), ("rounds", 1), ("paths", 1), ("lift_cells", 1),
                            ("max_examples", 1)):
            if getattr(self, name) is not None and getattr(self, name) < least:
                raise SmtVerifyError(f"{name} must be at least {least}, not {getattr(self, name)}", field=name)
        if self.levels is not None and self.levels < 0:
            raise SmtVerifyError(f"levels must be 0 (no lattice) or a positive level count, not {self.levels}",
                                 field="levels")
        if self.layer is not None and self.family != "pixel":
            raise SmtVerifyError("a hidden-layer search takes its input region from the pixel family", field="layer")
        if self.features > network.n_inputs:
            raise SmtVerifyError(f"features {self.features} exceeds the {network.n_inputs} input values",
                                 field="features")


@dataclass
class _Path:
    """A point a round keeps: an input on the grid of `dims`, reached by the integer vector `c`."""

    point: np.ndarray
    dims: list[int]
    c: list[int]
    margin: float


class _Run:
    """One search: the network, its onnxruntime session, the budgets left and what was found."""

    def __init__(self, network: Network, x: np.ndarray, label: int | None, settings: SearchSettings,
                 on_found: Callable[[Found], None] | None, on_progress: GridListener | None = None,
                 memory: SearchMemory | None = None) -> None:
        self.start = time.perf_counter()          # the timeout covers the session's start-up too
        self.deadline = Deadline.after(settings.timeout, self.start)
        settings.check(network)
        self.network, self.settings, self.on_found, self.on_progress = network, settings, on_found, on_progress
        self.original = np.asarray(x, dtype=np.float32).reshape(network.input_shape)
        self.reference = OnnxRuntimeExecutor(network)
        self.label = int(self.reference.classify(self.original)[0]) if label is None else int(label)
        self.grid = resolve(settings.levels, self.original, settings.span) if settings.family == "pixel" else \
            LatticeGrid(None, settings.span, f"the {settings.family} family is not kept on a lattice")
        if not 0 <= self.label < network.n_outputs:
            raise SmtVerifyError(f"label {self.label} is not a class of a network with {network.n_outputs} outputs",
                                 field="label")
        self.grids: list[GridRecord] = []
        self.memory = memory           # a resumed run's grids and examples; journals this one's
        self.found: list[Found] = []
        self.not_kept = 0              # examples beyond settings.max_examples: counted only
        self.rejected = 0
        self.stopped = ""              # why a budget stopped the search
        self.hidden = None if settings.layer is None else \
            HiddenLayerSearch(network, settings.hidden or HiddenSettings(settings.layer, steps=settings.steps))

    @property
    def evaluated(self) -> int:
        return sum(g.points_evaluated for g in self.grids)

    def search(self, manipulation: Manipulation, dims: list[int], base: _Path, round_: int, path: int,
               keep: int = 0) -> GridReport:
        """The one place a grid is searched: within the budgets left, every example confirmed and
        handed on as it is found."""
        s = self.settings
        left_points = None if s.max_points is None else max(0, s.max_points - self.evaluated)

        def accept(example: Example) -> None:
            self._accept(example, base, dims, round_)

        if self.hidden is not None:          # the input grid's region, searched at the hidden layer
            return self._hidden(manipulation, dims, round_, path, left_points)
        key = grid_key(round_, path, manipulation, dims)
        resume = None
        if self.memory:                      # a resumed run takes up what the earlier one did here
            self.found += self.memory.examples_of(key)
            earlier = self.memory.finished(key)
            if earlier:
                return self._note(earlier, manipulation, dims, round_, path)
            resume = self.memory.checkpoint(key)
        left_examples = None if s.max_examples is None else max(0, s.max_examples - len(self.found))
        listen = None if self.on_progress is None else \
            (lambda done, _found: self.on_progress(round_, done, manipulation.grid_size, len(self.found)))
        report = search_grid(self.network, manipulation, self.label, collect_all=s.collect_all,
                             max_points=left_points, max_seconds=None if s.timeout is None else self.deadline.left(),
                             evaluator=s.evaluator, reference=self.reference, keep_best=keep,
                             on_example=accept, max_examples=left_examples, on_progress=listen, resume=resume,
                             on_checkpoint=self.memory and self.memory.saver(key))
        if self.memory:
            self.memory.record(key, report)
        return self._note(report, manipulation, dims, round_, path)

    def _hidden(self, manipulation: Manipulation, dims: list[int], round_: int, path: int,
                left_points: int | None) -> GridReport:
        """A hidden-layer grid over the region of `manipulation`: its examples (c indexing the hidden
        dimensions) are confirmed once more like any other."""
        def accept(example: Example) -> None:
            self._accept(example, _Path(manipulation.original, [], [], np.inf), self.hidden.reports[-1].dims, round_,
                         self.settings.layer)

        report = self.hidden.search(manipulation, self.label, left_points, self.deadline, self.settings.collect_all,
                                    accept)
        return self._note(report, manipulation, dims, round_, path)

    def _note(self, report: GridReport, manipulation: Manipulation, dims: list[int], round_: int,
              path: int) -> GridReport:
        """Record a grid searched; a budget or an undecided grid stops the search."""
        self.grids.append(GridRecord(round_, path, dims, report.grid_size, report.points_evaluated, report.verdict,
                                     report.evaluator, report.seconds, report.search_seconds, manipulation,
                                     earlier_points=report.earlier_points))
        if report.verdict in (Verdict.UNKNOWN, Verdict.UNSAFE) and report.reason and not self.stopped:
            self.stopped = report.reason
        self.not_kept += report.examples_found - report.carried - len(report.examples)
        return report

    def _accept(self, example: Example, base: _Path, dims: list[int], round_: int, layer: str | None = None) -> None:
        """Confirm a grid example once more, from scratch (float32 inside the domain exactly, onnxruntime),
        and re-measure it from the original input along the whole path."""
        if self.memory and self.memory.is_known(example.input):
            return                     # a grid searched again from its start: the earlier run wrote this one
        lo, hi = self.settings.domain
        confirmed = confirm.confirm_misclassification(self.network, example.input, self.label, lo, hi,
                                                      with_numpy=False)
        if confirmed is None or not np.array_equal(confirmed.input.reshape(self.original.shape), example.input):
            self.rejected += 1
            return
        c = np.concatenate([np.asarray(base.c, np.int64), example.c.astype(np.int64)])
        self._record(Found(Example.of(example.input, self.original, c, self.label, confirmed.output),
                           base.dims + dims, round_, layer=layer))

    def _record(self, found: Found) -> None:
        self.found.append(found)
        if self.on_found is not None:
            self.on_found(found)

    def _lift(self) -> None:
        """Try to prove the continuous region of every (safe) grid, the time shared evenly (at most
        lift_timeout, and never past the search's deadline); a counterexample between grid points is
        recorded as an example (off the grid)."""
        s = self.settings
        verifier = Verifier(self.network, VerifySettings(timeout=s.lift_timeout))
        end = time.perf_counter() + min(s.lift_timeout, self.deadline.left())
        for i, grid in enumerate(self.grids):
            share = (end - time.perf_counter()) / (len(self.grids) - i)
            grid.lift = lift(verifier, grid.manipulation, self.label, share, s.lift_cells)
            for cex in grid.lift.counterexamples:
                self._record(Found(Example.of(cex.input, self.original, np.zeros(0, np.int64), self.label, cex.output),
                                   grid.dims, grid.round, off_grid=True))
            if self.found:
                return

    def done(self) -> bool:
        return bool(self.found) or bool(self.stopped)

    def report(self, reason: str = "") -> SearchReport:
        if self.found:
            verdict = Verdict.UNSAFE
            reason = "" if self.found[0].example.l0 else \
                f"the original input itself is classified as {self.found[0].example.new_class}, not {self.label}"
            if self.stopped and self.settings.collect_all:      # every example was asked for: say what is missing
                reason = "; ".join(filter(None, [reason, f"{self.stopped}: the examples are those found before it, "
                                                 "and the grids hold more points unsearched"]))
        elif self.stopped:
            verdict, reason = Verdict.UNKNOWN, self.stopped
        elif any(not g.safe for g in self.grids):
            verdict, reason = Verdict.UNKNOWN, "a grid was left undecided (points the executors dispute)"
        else:
            verdict, reason = self._safe_verdict()
        guarantee = HIDDEN_GRID_GUARANTEE if self.hidden is not None and verdict == Verdict.SAFE_ON_GRID \
            else GUARANTEES.get(verdict, "none")
        if verdict in (Verdict.SAFE, Verdict.SAFE_ON_GRID):
            guarantee += f"; the grid searched: {self._grid_description()}"
        return SearchReport(verdict, self.label, sum(g.grid_points for g in self.grids), self.evaluated,
                            time.perf_counter() - self.start, self.found, [], self.grids, self.rejected, reason,
                            guarantee, [] if self.hidden is None else self.hidden.reports,
                            len(self.found) + self.not_kept, self.grid)

    def _grid_description(self) -> str:
        """The span the grids used and their lattice: a grid verdict speaks about that grid only."""
        spans = sorted({float(g.manipulation.span[0]) for g in self.grids if isinstance(g.manipulation,
                                                                                        PixelManipulation)})
        span = ", ".join(f"{v:.6g}" for v in spans) if spans else f"{self.grid.span:.6g}"
        where = f"values on the lattice k/{self.grid.levels}" if self.grid.levels else "no lattice"
        return f"span {span}, steps {self.settings.steps}, {where}" + (f" ({self.grid.note})" if self.grid.note else "")

    def _safe_verdict(self) -> tuple[Verdict, str]:
        """Every grid is safe: SAFE when lifting proves every grid's continuous region, UNSAFE when
        it finds an example between grid points, else SAFE_ON_GRID (with the cells proven)."""
        if not self.settings.lift or self.hidden is not None:
            return Verdict.SAFE_ON_GRID, ""
        self._lift()
        if self.found:
            return Verdict.UNSAFE, "an adversarial example between grid points, found by the verifier while lifting"
        proven = sum(g.lift.proven for g in self.grids)
        total = sum(g.lift.cells for g in self.grids)
        if all(g.lift.continuous for g in self.grids):
            return Verdict.SAFE, f"the continuous region of every grid is proven ({proven} of {total} cells)"
        cut_short = " (the timeout ran out while lifting)" if self.deadline.passed() else ""
        return Verdict.SAFE_ON_GRID, f"{proven} of {total} cells of the continuous regions proven safe{cut_short}"


def _whole_input(settings: SearchSettings, x: np.ndarray) -> Manipulation:
    family = BrightnessManipulation if settings.family == "brightness" else ContrastManipulation
    return family(x, settings.span, settings.steps, settings.domain)


def dlv_search(network: Network, x: np.ndarray, label: int | None = None, settings: SearchSettings | None = None,
               dims: list[int] | np.ndarray | None = None,
               on_found: Callable[[Found], None] | None = None, on_progress: GridListener | None = None,
               memory: SearchMemory | None = None) -> SearchReport:
    """DLV's rounds on the input `x` (the network's layout) of class `label` (default: onnxruntime's).

    `dims` gives the first round's features (flat C-order indices); otherwise the heuristic picks
    them. Later rounds, up to `settings.rounds`, add `settings.features` features each. The
    brightness and contrast families have no features: one grid, one round. `on_found` sees each
    confirmed example at once (an `export.ExampleWriter.write`, say), the first
    `settings.max_examples` of them; later ones are only counted (`examples_found`). Every phase
    stops at `settings.timeout`: a grid it cuts short is recorded with the points it evaluated.
    `on_progress` hears (round, points done, grid size, examples found) as each grid goes. With
    `memory` (a run folder's, search_memory.py) the search goes on from where an earlier run of
    the same search stopped, and journals its own grids.
    """
    settings = settings or SearchSettings()
    run = _Run(network, x, label, settings, on_found, on_progress, memory)
    start_path = _Path(run.original, [], [], np.inf)
    if settings.family != "pixel":
        report = run.search(_whole_input(settings, run.original), [], start_path, 1, 0)
        return _finish(run, [RoundRecord(1, 0, 1, report.points_evaluated, len(run.found), None)])
    if dims is not None:
        dims = np.asarray(dims, dtype=np.int64).reshape(-1)
        if len(dims) == 0 or np.any(dims < 0) or np.any(dims >= network.n_inputs) or len(np.unique(dims)) != len(dims):
            raise SmtVerifyError(f"pixels must be distinct flat indices in 0..{network.n_inputs - 1}", field="pixels")
    paths, rounds = [start_path], []
    for round_ in range(1, settings.rounds + 1):
        kept: list[_Path] = []
        before, found_before, moved = run.evaluated, len(run.found), 0
        for index, path in enumerate(paths):
            chosen = dims if round_ == 1 and dims is not None else \
                select_features(network, path.point, settings.features, settings.heuristic, run.label,
                                exclude=path.dims)
            if not len(chosen):
                continue
            chosen = [int(d) for d in chosen]
            manipulation = PixelManipulation(path.point, chosen, run.grid.span, settings.steps, settings.domain,
                                             run.grid.levels)
            report = run.search(manipulation, chosen, path, round_, index, settings.paths)
            moved = max(moved, len(path.dims) + len(chosen))
            kept += [_Path(manipulation.apply(c[None])[0], path.dims + chosen, path.c + c.tolist(), float(m))
                     for c, m in zip(report.best_c, report.best_margins)]
            if run.found and not settings.collect_all or run.stopped:
                break
        kept.sort(key=lambda p: p.margin)
        paths = kept[:settings.paths]
        rounds.append(RoundRecord(round_, moved, len(run.grids) - sum(r.grids for r in rounds),
                                  run.evaluated - before, len(run.found) - found_before,
                                  paths[0].margin if paths else None))
        if run.done() or not paths:
            break
    return _finish(run, rounds)


def _finish(run: _Run, rounds: list[RoundRecord]) -> SearchReport:
    report = run.report()
    report.rounds = rounds
    return report


# ----- minimal manipulations ----------------------------------------------------------------------
@dataclass
class MinimalReport:
    """The smallest manipulation on a ladder of spans for which the grid holds an adversarial example."""

    dims: list[int]
    steps: int
    spans: list[float]                         # the ladder searched, ascending (on the lattice, if any)
    min_span: float | None                     # the smallest span whose grid holds an example
    min_pixels: int | None                     # the fewest changed pixels of an example on any grid searched
    min_pixels_span: float | None              # the (smallest) span where that minimum is reached
    per_span: list[dict[str, Any]]             # span, verdict, fewest changed pixels of that grid
    examples: list[Found]                      # one per span whose grid holds an example (fewest pixels)
    search: SearchReport
    levels: int | None = None                  # the lattice k/levels the grids lay on (None: none)
    grid_note: str = ""                        # how the spans asked for were rounded onto it

    def summary(self) -> dict[str, Any]:
        return {"dims": self.dims, "steps": self.steps, "spans": self.spans, "levels": self.levels,
                "grid_note": self.grid_note, "min_span": self.min_span,
                "min_pixels": self.min_pixels, "min_pixels_span": self.min_pixels_span, "per_span": self.per_span,
                "examples": [f.summary() for f in self.examples], "verdict": self.search.verdict.value,
                "points_evaluated": self.search.points_evaluated, "seconds": round(self.search.seconds, 4)}


def minimal_search(network: Network, x: np.ndarray, dims: list[int] | np.ndarray, spans: list[float],
                   steps: int, label: int | None = None, settings: SearchSettings | None = None,
                   on_found: Callable[[Found], None] | None = None) -> MinimalReport:
    """Issue item 7: search the grid of `dims` at each span of the ladder (ascending), each to its first
    example. The grid order puts the fewest changed pixels first, so a grid's first example has the
    fewest of that grid; the smallest span is the first on the ladder whose grid holds one. Stops early
    once a one-pixel example is known. Budgets, domain and lattice come from `settings`; on a lattice,
    each span is rounded onto it (spans that round alike are searched once)."""
    settings = settings or SearchSettings()
    dims = [int(d) for d in np.asarray(dims, dtype=np.int64).reshape(-1)]
    run = _Run(network, x, label, SearchSettings(**{**settings.__dict__, "span": min(spans), "steps": steps,
                                                    "collect_all": False, "family": "pixel"}), on_found)
    levels = run.grid.levels
    snapped = [snap_span(float(s), levels) for s in spans] if levels else []
    spans = sorted({g.span for g in snapped} if levels else {float(s) for s in spans})
    note = "; ".join(g.note for g in snapped if g.note)
    start_path, per_span, examples = _Path(run.original, [], [], np.inf), [], []
    for span in spans:
        found_before = len(run.found)
        report = run.search(PixelManipulation(run.original, dims, span, steps, settings.domain, levels), dims,
                            start_path, 1, 0)
        new = run.found[found_before:]
        examples += new
        per_span.append({"span": span, "verdict": report.verdict.value, "points_evaluated": report.points_evaluated,
                         "min_pixels": new[0].example.l0 if new else None})
        if run.stopped or any(f.example.l0 == 1 for f in examples):
            break
    with_example = [r for r in per_span if r["min_pixels"] is not None]
    fewest = min(with_example, key=lambda r: (r["min_pixels"], r["span"]), default=None)
    search = _finish(run, [RoundRecord(1, len(dims), len(run.grids), run.evaluated, len(run.found), None)])
    return MinimalReport(dims, steps, spans, with_example[0]["span"] if with_example else None,
                         fewest and fewest["min_pixels"], fewest and fewest["span"], per_span, examples, search,
                         levels, note)

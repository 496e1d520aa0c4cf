"""Progress on stderr for people at a terminal (tqdm): for a certification, a bar of the time used
against the timeout, with the phase, what is open and what is proven; for a grid search, the
points of each round's grid, their rate and the time left, and the examples found. None when stderr is not a terminal or the user
asked for quiet, so logs and pipes stay clean; stdout is never touched."""
from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from typing import IO, Callable, Iterator

from .batch import OUTCOMES, BatchSummary, Item
from .search import GridListener
from .verify.progress import Listener, Snapshot


def wanted(quiet: bool, stream: IO[str] | None = None) -> bool:
    """Progress only for a person watching: not with --quiet, not into a file or pipe."""
    stream = stream if stream is not None else sys.stderr
    return not quiet and hasattr(stream, "isatty") and stream.isatty()


def describe(snapshot: Snapshot) -> str:
    """One line: the case, the phase, and what splitting has open and proven."""
    parts = [snapshot.phase]
    if snapshot.cases > 1:
        parts.insert(0, f"case {snapshot.case}/{snapshot.cases}")
    if snapshot.open is not None:
        parts.append(f"{snapshot.open} open")
    parts.append(f"{snapshot.leaves} closed")
    if snapshot.proven_share is not None:
        parts.append(f"{snapshot.proven_share:.1%} proven")
    return ", ".join(parts)


def _size(stream: IO[str], default: tuple[int, int] = (100, 24)) -> tuple[int, int]:
    """The terminal's columns and lines; the default where it reports none (a pseudo-terminal whose
    size was never set says 0 x 0, and tqdm then hides its bar as below the last line)."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return default
    return (size.columns or default[0], size.lines or default[1])


@contextmanager
def certification_progress(enabled: bool, stream: IO[str] | None = None) -> Iterator[Listener | None]:
    """A listener drawing the decision's progress, or None when not `enabled`."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = None

    def show(snapshot: Snapshot) -> None:
        nonlocal bar
        if bar is None:
            out = stream or sys.stderr
            columns, lines = _size(out)
            bar = tqdm(total=round(snapshot.timeout, 1), unit="s", file=out, leave=False, ncols=columns, nrows=lines,
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}", desc="certifying")
        bar.n = round(min(snapshot.elapsed, snapshot.timeout), 1)
        bar.set_postfix_str(describe(snapshot), refresh=True)

    try:
        yield show
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def search_progress(enabled: bool, stream: IO[str] | None = None, interval: float = 0.1
                    ) -> Iterator[GridListener | None]:
    """A listener drawing a grid search's progress (points of the current round's grid, rate, time
    left, examples found), or None when not `enabled`. Redrawn at most every `interval` seconds,
    and whenever an example is found."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar, shown_round, shown_examples = None, None, 0

    def show(round_: int, done: int, total: int, examples: int) -> None:
        nonlocal bar, shown_round, shown_examples
        if bar is None:
            out = stream or sys.stderr
            columns, lines = _size(out)
            bar = tqdm(total=total, unit="pt", unit_scale=True, file=out, leave=False, ncols=columns, nrows=lines,
                       mininterval=interval)
        if round_ != shown_round:
            bar.reset(total=total)
            bar.set_description(f"round {round_}", refresh=False)
            shown_round = round_
        bar.set_postfix_str(f"{examples} examples", refresh=examples != shown_examples)
        shown_examples = examples
        bar.update(done - bar.n)

    try:
        yield show
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def batch_progress(enabled: bool, total: int, done: int = 0, stream: IO[str] | None = None
                   ) -> Iterator[Callable[[Item, BatchSummary], None] | None]:
    """A listener drawing a batch's items done out of `total` and its outcome counts so far."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    out = stream or sys.stderr
    columns, lines = _size(out)
    bar = tqdm(total=total, initial=done, unit="item", file=out, leave=False, ncols=columns, nrows=lines,
               desc="certifying")

    def show(item: Item, summary: BatchSummary) -> None:
        counts = summary.per_eps.get(item.eps, {})
        bar.set_postfix_str(f"eps {item.eps:g}: " + ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES),
                            refresh=False)
        bar.update(1)

    try:
        yield show
    finally:
        bar.close()

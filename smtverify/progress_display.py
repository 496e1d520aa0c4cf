"""Progress on stderr for people at a terminal (tqdm): for a certification, a bar of the time used
against the timeout, with the phase, what is open and what is proven; for a grid search, the
points of each round's grid, their rate and the time left, and the examples found; for batch and
bench, the items done and their outcome counts. None when stderr is not a terminal or the user
asked for quiet, so logs and pipes stay clean; stdout is never touched."""
from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from collections import Counter
from typing import IO, TYPE_CHECKING, Callable, ContextManager, Iterator

from .verify.progress import Listener, Snapshot

if TYPE_CHECKING:      # (their modules import the search engines: `vnnlib` and `certify` need neither)
    from .batch import BatchSummary, Item
    from .search import GridListener


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


class _LazyBar:
    """One tqdm bar on a stream, made on first use (sized to the terminal) and closed at the end."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream, self.bar = stream, None

    def open(self, **options):
        if self.bar is None:
            from tqdm import tqdm

            columns, lines = _size(self.stream)
            self.bar = tqdm(file=self.stream, leave=False, ncols=columns, nrows=lines, **options)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _drawing(enabled: bool, stream: IO[str] | None, listener_of: Callable[[_LazyBar], Callable]) -> Iterator:
    """The listener `listener_of` makes on a lazy bar, or None when not `enabled`."""
    if not enabled:
        yield None
        return
    bar = _LazyBar(stream or sys.stderr)
    try:
        yield listener_of(bar)
    finally:
        bar.close()


def certification_progress(enabled: bool, stream: IO[str] | None = None) -> ContextManager[Listener | None]:
    """A listener drawing the decision's progress, or None when not `enabled`."""
    def listener_of(lazy: _LazyBar) -> Listener:
        def show(snapshot: Snapshot) -> None:
            bar = lazy.open(total=round(snapshot.timeout, 1), unit="s", desc="certifying",
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
            bar.n = round(min(snapshot.elapsed, snapshot.timeout), 1)
            bar.set_postfix_str(describe(snapshot), refresh=True)
        return show
    return _drawing(enabled, stream, listener_of)


def search_progress(enabled: bool, stream: IO[str] | None = None, interval: float = 0.1
                    ) -> ContextManager[GridListener | None]:
    """A listener drawing a grid search's progress (points of the current round's grid, rate, time
    left, examples found), or None when not `enabled`. Redrawn at most every `interval` seconds,
    and whenever an example is found."""
    def listener_of(lazy: _LazyBar) -> GridListener:
        shown = {"round": None, "examples": 0}

        def show(round_: int, done: int, total: int, examples: int) -> None:
            bar = lazy.open(total=total, unit="pt", unit_scale=True, mininterval=interval)
            if round_ != shown["round"]:
                bar.reset(total=total)
                bar.set_description(f"round {round_}", refresh=False)
                shown["round"] = round_
            bar.set_postfix_str(f"{examples} examples", refresh=examples != shown["examples"])
            shown["examples"] = examples
            bar.update(done - bar.n)
        return show
    return _drawing(enabled, stream, listener_of)


def batch_progress(enabled: bool, total: int, done: int = 0, stream: IO[str] | None = None
                   ) -> ContextManager[Callable[[Item, BatchSummary], None] | None]:
    """A listener drawing a batch's items done out of `total` and its outcome counts so far."""
    from .batch import OUTCOMES

    def listener_of(lazy: _LazyBar) -> Callable[[Item, BatchSummary], None]:
        def show(item: Item, summary: BatchSummary) -> None:
            bar = lazy.open(total=total, initial=done, unit="item",
                            desc="certifying" if summary.mode == "certify" else "searching")
            counts = summary.per_eps.get(item.eps, {})
            bar.set_postfix_str(f"eps {item.eps:g}: " + ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES),
                                refresh=False)
            bar.update(1)
        return show
    return _drawing(enabled, stream, listener_of)


def bench_progress(enabled: bool, total: int, stream: IO[str] | None = None
                   ) -> ContextManager[Callable[[str, Counter], None] | None]:
    """A listener drawing a bench run's instances done out of `total` and its verdict counts."""
    def listener_of(lazy: _LazyBar) -> Callable[[str, Counter], None]:
        def show(line: str, verdicts: Counter) -> None:
            bar = lazy.open(total=total, unit="instance", desc="bench")
            bar.write(line, file=lazy.stream)
            bar.set_postfix_str(", ".join(f"{verdicts[w]} {w}" for w in ("sat", "unsat", "timeout", "unknown", "error")
                                          if verdicts[w]), refresh=False)
            bar.update(1)
        return show
    return _drawing(enabled, stream, listener_of)

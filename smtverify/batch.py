"""Certification over a dataset: verified accuracy, per eps and per class, journalled as it goes.

Each (eps, image) is one item: an image the network misclassifies is counted as such (never
verified); a correctly classified one is certified on its L-infinity ball (SAFE: verified robust,
UNSAFE: falsified, with a confirmed counterexample; else unknown). Every finished item is appended
to a journal (one JSON line), so an interrupted run keeps what it did and `resume` skips it.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .network import Network
from .verdict import Verdict
from .verify import Settings, Verifier, robustness_property

OUTCOMES = ("verified", "falsified", "unknown", "misclassified")
JOURNAL, SUMMARY, ITEMS = "journal.jsonl", "summary.json", "items.csv"   # the run folder's files


@dataclass(frozen=True)
class Item:
    """One image certified at one eps."""

    eps: float
    index: int
    label: int
    predicted: int
    outcome: str                 # one of OUTCOMES
    verdict: str                 # the engine's verdict ("" for a misclassified image)
    seconds: float
    min_margin: float | None = None
    counterexample_class: int | None = None


@dataclass
class BatchSummary:
    """Clean accuracy, and per eps the outcomes overall and per class (verified accuracy)."""

    images: int
    clean_correct: int
    per_eps: dict[float, Counter] = field(default_factory=dict)
    per_class: dict[float, dict[int, Counter]] = field(default_factory=dict)
    seconds: float = 0.0
    items: int = 0

    def add(self, item: Item) -> None:
        self.per_eps.setdefault(item.eps, Counter())[item.outcome] += 1
        self.per_class.setdefault(item.eps, {}).setdefault(item.label, Counter())[item.outcome] += 1
        self.seconds += item.seconds
        self.items += 1

    def verified_accuracy(self, eps: float) -> float:
        """Verified robust images over all images (misclassified ones count against it)."""
        return self.per_eps.get(eps, Counter())["verified"] / self.images if self.images else 0.0

    def as_dict(self) -> dict:
        return {"images": self.images, "clean_accuracy": self.clean_correct / self.images if self.images else 0.0,
                "items": self.items, "seconds": round(self.seconds, 3),
                "per_eps": [{"eps": eps, **{o: counts[o] for o in OUTCOMES},
                             "verified_accuracy": self.verified_accuracy(eps),
                             "per_class": {str(c): {o: n[o] for o in OUTCOMES}
                                           for c, n in sorted(self.per_class[eps].items())}}
                            for eps, counts in sorted(self.per_eps.items())]}


class Journal:
    """The run's items, one JSON line each, appended and flushed as each finishes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def done(self) -> list[Item]:
        """The items a previous run finished (a torn last line, from a kill, is dropped)."""
        if not self.path.exists():
            return []
        items = []
        for line in self.path.read_text().splitlines():
            try:
                items.append(Item(**json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
        return items

    def append(self, item: Item) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(asdict(item)) + "\n")


class BatchRun:
    """Every (eps, image) of a dataset to certify, with the summary of those finished so far
    (a resumed run's journalled items among them)."""

    def __init__(self, network: Network, inputs: np.ndarray, labels: np.ndarray, eps_values: list[float],
                 settings: Settings, item_timeout: float, journal: Journal | None = None,
                 domain: tuple[float, float] = (0.0, 1.0)) -> None:
        self.network, self.inputs, self.labels, self.eps_values = network, inputs, labels, eps_values
        self.item_timeout, self.journal, self.domain = item_timeout, journal, domain
        self.verifier = Verifier(network, settings)
        self.predicted = np.argmax(network.logits(inputs), axis=1)
        self.summary = BatchSummary(len(inputs), int(np.sum(self.predicted == labels)))
        self.finished = set()
        for item in journal.done() if journal else []:
            self.finished.add((item.eps, item.index))
            self.summary.add(item)

    @property
    def total(self) -> int:
        return len(self.inputs) * len(self.eps_values)

    def items(self, deadline: float, on_item: Callable[[Item, BatchSummary], None] | None = None) -> Iterator[Item]:
        """Each item not finished yet, certified within its own timeout and the run's deadline,
        journalled and yielded as it finishes; none begins past the deadline."""
        for eps in self.eps_values:
            for i, (x, label) in enumerate(zip(self.inputs, self.labels)):
                left = deadline - time.perf_counter()
                if (eps, i) in self.finished or left <= 0:
                    continue
                item = _certify_one(self.verifier, self.network, x, int(label), int(self.predicted[i]), eps, i,
                                    min(self.item_timeout, left), self.domain)
                self.summary.add(item)
                self.finished.add((eps, i))
                if self.journal:
                    self.journal.append(item)
                if on_item:
                    on_item(item, self.summary)
                yield item


def _certify_one(verifier: Verifier, network: Network, x: np.ndarray, label: int, predicted: int, eps: float,
                 index: int, timeout: float, domain: tuple[float, float]) -> Item:
    began = time.perf_counter()
    if predicted != label:
        return Item(eps, index, label, predicted, "misclassified", "", time.perf_counter() - began)
    result = verifier.verify(robustness_property(network, x, label, eps, *domain), timeout=timeout)
    outcome = {Verdict.SAFE: "verified", Verdict.UNSAFE: "falsified"}.get(result.verdict, "unknown")
    new_class = int(np.argmax(result.counterexample.output)) if result.counterexample is not None else None
    return Item(eps, index, label, predicted, outcome, result.verdict.value, time.perf_counter() - began,
                result.min_margin, new_class)


def prepare_run_dir(folder: Path, resume: bool, force: bool) -> Journal:
    """The run folder and its journal. A folder holding another run's files is refused unless the
    run is resumed (its journal kept) or forced (its files from a run cleared), so two runs never
    mix silently."""
    from .errors import SmtVerifyError

    folder.mkdir(parents=True, exist_ok=True)
    ours = [folder / name for name in (JOURNAL, SUMMARY, ITEMS)]
    holds = any(folder.iterdir())
    if holds and not (resume or force):
        raise SmtVerifyError("holds files already: --resume to go on with its run, --force to start over",
                             file=folder, field="--out")
    if force:
        for path in ours:
            path.unlink(missing_ok=True)
    return Journal(folder / JOURNAL)


def write_outputs(folder: Path, summary: BatchSummary, journal: Journal, about: dict) -> None:
    """summary.json (the run's figures and what it was) and items.csv (one row per finished item)."""
    import csv

    (folder / SUMMARY).write_text(json.dumps({**about, **summary.as_dict()}, indent=1))
    with open(folder / ITEMS, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(Item.__dataclass_fields__))
        for item in journal.done():
            writer.writerow(list(asdict(item).values()))


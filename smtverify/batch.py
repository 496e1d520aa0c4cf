"""Robustness over a dataset: verified accuracy per neighbourhood size and per class, journalled as it goes.

Each (size, image) is one item, decided in one of two modes:
- certify: the L-infinity ball of radius eps (the size) is proven (verified), or a counterexample is
  confirmed (falsified), else unknown; "verified" then means robust on the whole continuous ball;
- search: DLV's grid search with the span as the size; "verified" means no example on that grid
  (SAFE_ON_GRID, the grid's guarantee only), "falsified" a confirmed adversarial grid point.
An image the network misclassifies is counted as such and never verified. Every finished item is
appended to the run folder's journal and its counterexample saved as it is known, so an
interrupted run keeps what it did and a resumed one skips it.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Protocol

import numpy as np

from .grid import Example
from .network import Network
from .run_folder import EXAMPLES, ITEMS, RunFolder
from .verdict import Verdict

OUTCOMES = ("verified", "falsified", "unknown", "misclassified")


@dataclass(frozen=True)
class Item:
    """One image decided at one neighbourhood size."""

    eps: float                   # the size: eps (certify) or span (search)
    index: int
    label: int
    predicted: int
    outcome: str                 # one of OUTCOMES
    verdict: str                 # the engine's verdict ("" for a misclassified image)
    seconds: float
    min_margin: float | None = None
    counterexample_class: int | None = None
    example_file: str | None = None      # the counterexample's npz, relative to the run folder
    l0: int | None = None
    linf: float | None = None


@dataclass(frozen=True)
class Decision:
    """What a mode says of one image: the engine's verdict word, the outcome, and a confirmed
    counterexample if it found one."""

    outcome: str
    verdict: str
    example: Example | None = None
    min_margin: float | None = None
    manipulated_dims: list[int] | None = None     # search mode: the dimensions the example's c moves


class Decider(Protocol):
    mode: str

    def __call__(self, x: np.ndarray, label: int, size: float, timeout: float) -> Decision: ...


class Certifier:
    """Certify mode: the L-infinity ball of radius `size` within the domain."""

    mode = "certify"

    def __init__(self, network: Network, domain: tuple[float, float]) -> None:
        from .verify import Settings, Verifier

        self.network, self.domain, self.verifier = network, domain, Verifier(network, Settings())

    def __call__(self, x: np.ndarray, label: int, size: float, timeout: float) -> Decision:
        from .verify import robustness_property

        result = self.verifier.verify(robustness_property(self.network, x, label, size, *self.domain), timeout=timeout)
        outcome = {Verdict.SAFE: "verified", Verdict.UNSAFE: "falsified"}.get(result.verdict, "unknown")
        example = None
        if result.counterexample is not None:
            cex = result.counterexample
            example = Example.of(cex.input.reshape(x.shape).astype(np.float32), x, np.zeros(0, np.int64), label,
                                 np.asarray(cex.output, np.float64).reshape(-1))
        return Decision(outcome, result.verdict.value, example, result.min_margin)


class GridSearcher:
    """Search mode: DLV's search (`settings`, with its span set to the size) to the first example."""

    mode = "search"

    def __init__(self, network: Network, settings) -> None:
        self.network, self.settings = network, settings

    def __call__(self, x: np.ndarray, label: int, size: float, timeout: float) -> Decision:
        from dataclasses import replace

        from .search import dlv_search

        settings = replace(self.settings, span=size, timeout=timeout, collect_all=False, max_examples=1)
        report = dlv_search(self.network, x, label, settings)
        outcome = {Verdict.SAFE_ON_GRID: "verified", Verdict.SAFE: "verified", Verdict.UNSAFE: "falsified"}.get(
            report.verdict, "unknown")
        found = report.examples[0] if report.examples else None
        return Decision(outcome, report.verdict.value, found and found.example, None, found and found.dims)


@dataclass
class BatchSummary:
    """Clean accuracy, and per size the outcomes overall and per class (verified accuracy)."""

    images: int
    clean_correct: int
    mode: str = "certify"
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
        return {"mode": self.mode, "size": "eps" if self.mode == "certify" else "span", "images": self.images,
                "clean_accuracy": self.clean_correct / self.images if self.images else 0.0,
                "items": self.items, "seconds": round(self.seconds, 3),
                "seconds_per_item": round(self.seconds / self.items, 3) if self.items else 0.0,
                "per_eps": [{"eps": eps, **{o: counts[o] for o in OUTCOMES},
                             "verified_accuracy": self.verified_accuracy(eps),
                             "per_class": {str(c): {o: n[o] for o in OUTCOMES}
                                           for c, n in sorted(self.per_class[eps].items())}}
                            for eps, counts in sorted(self.per_eps.items())]}


class BatchRun:
    """Every (size, image) of a dataset to decide, with the summary of those finished so far
    (a resumed run's journalled items among them)."""

    def __init__(self, network: Network, inputs: np.ndarray, labels: np.ndarray, sizes: list[float],
                 decide: Decider, item_timeout: float, folder: RunFolder | None = None,
                 domain: tuple[float, float] = (0.0, 1.0)) -> None:
        self.network, self.inputs, self.labels, self.sizes = network, inputs, labels, sizes
        self.decide, self.item_timeout, self.folder, self.domain = decide, item_timeout, folder, domain
        self.logits = network.logits(inputs)
        self.predicted = np.argmax(self.logits, axis=1)
        self.summary = BatchSummary(len(inputs), int(np.sum(self.predicted == labels)), decide.mode)
        self.finished: set[tuple[float, int]] = set()
        for item in self.done():
            self.finished.add((item.eps, item.index))
            self.summary.add(item)

    def done(self) -> list[Item]:
        """The items journalled so far, in the order they finished."""
        if self.folder is None:
            return []
        return [Item(**{k: v for k, v in record.items() if k != "kind"})
                for record in self.folder.journal.records("item")]

    @property
    def total(self) -> int:
        return len(self.inputs) * len(self.sizes)

    def items(self, deadline: float, on_item: Callable[[Item, BatchSummary], None] | None = None) -> Iterator[Item]:
        """Each item not finished yet, decided within its own timeout and the run's deadline,
        journalled (its counterexample saved first) and yielded as it finishes; none begins past
        the deadline."""
        for size in self.sizes:
            for i, label in enumerate(self.labels):
                left = deadline - time.perf_counter()
                if (size, i) in self.finished or left <= 0:
                    continue
                item = self._one(size, i, int(label), min(self.item_timeout, left))
                self.summary.add(item)
                self.finished.add((size, i))
                if self.folder:
                    self.folder.journal.append("item", asdict(item))
                if on_item:
                    on_item(item, self.summary)
                yield item

    def _one(self, size: float, index: int, label: int, timeout: float) -> Item:
        began = time.perf_counter()
        predicted = int(self.predicted[index])
        if predicted != label:
            return Item(size, index, label, predicted, "misclassified", "", time.perf_counter() - began)
        decision = self.decide(self.inputs[index], label, size, timeout)
        example, saved = decision.example, None
        if example is not None and self.folder is not None:
            saved = self._save(example, size, index, decision.manipulated_dims)
        return Item(size, index, label, predicted, decision.outcome, decision.verdict, time.perf_counter() - began,
                    decision.min_margin, example and example.new_class, saved, example and example.l0,
                    example and example.linf)

    def _save(self, example: Example, size: float, index: int, dims: list[int] | None) -> str:
        """The counterexample's files under examples/, named by size and image."""
        from .export import save_example

        folder = self.folder.path / EXAMPLES
        folder.mkdir(exist_ok=True)
        path = folder / f"{self.summary.as_dict()['size']}{size:g}_{index:05d}.npz"
        save_example(path, example, self.inputs[index], self.domain, True, self.logits[index],
                     image_index=index, size=size, manipulated_dims=np.asarray(dims or [], np.int64))
        return str(path.relative_to(self.folder.path))


def write_outputs(folder: RunFolder, run: BatchRun, about: dict, complete: bool) -> dict:
    """summary.json (the run's figures and what it was) and items.csv (one row per finished
    item); returns the summary's record."""
    import csv

    record = {**about, **run.summary.as_dict(), "total_items": run.total}
    folder.write_summary(record, complete)
    with open(folder.path / ITEMS, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(Item.__dataclass_fields__))
        for item in run.done():
            writer.writerow(list(asdict(item).values()))
    return record


def images_identity(inputs: np.ndarray, labels: np.ndarray) -> str:
    """The dataset's fingerprint for the manifest: a resumed run must decide the same images."""
    from .run_folder import sha256_of_array

    return sha256_of_array(np.concatenate([inputs.reshape(len(inputs), -1).astype(np.float32),
                                           labels.reshape(-1, 1).astype(np.float32)], axis=1))

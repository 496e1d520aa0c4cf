"""Saving adversarial examples as they are found: for people (PNG), for tools and for retraining (METHOD 7).

Each example is written the moment it is confirmed, so a long run that is interrupted keeps what it
found. Per example an npz holds the exact float32 input and how it differs from the original; image
inputs also get a PNG. The PNG is the example itself (example_NNNN.png) only when reading it back gives
the same tensor: the input lies on the 8-bit lattice k/255 of the [0, 1] range a PNG is read into (the
search's grids do, by default, for 8-bit inputs). Otherwise (brightness or contrast, a counterexample
between grid points, an input that is not 8-bit) the npz is the example and the PNG, named
example_NNNN.picture.png, only shows it; the npz says which (`png`, `png_exact`). With `panels`,
each image example also gets example_NNNN.panel.png for people (panel.py): original, adversarial,
difference. `retrain.npz` (inputs, labels: the correct class of each example written) is written when
the writer closes, also on an interrupt, and loads straight into a training loop.
At most `max_files` examples are written (a grid can hold millions): later ones are only counted,
so disk and memory stay bounded, and retrain.npz holds the written ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .manipulations import Domain
from .panel import save_panel
from .png import is_image, png_is_exact, png_name, save_png
from .atomic import write_whole
from .grid import Example
from .search_report import Found

MAX_FILES = 1000
MAX_PANELS = 100      # panels are for people (a report's gallery shows 48): the first 100 examples get one


def save_example(path: Path, example: Example, original: np.ndarray, domain: Domain = (0.0, 1.0),
                 panel: bool = False, original_logits: np.ndarray | None = None,
                 **extra: Any) -> tuple[str | None, bool | None]:
    """One example's files: path (an npz holding the exact input, the original, classes, logits,
    distances and `extra`), for an image also its PNG (exact, or .picture.png) and with `panel` its
    panel (the original's confidence on it when its logits are given). The npz is renamed into place whole, so an interrupt never leaves
    a torn one. Returns (PNG file, whether it holds the example exactly); (None, None) for non-images."""
    png_file, png_exact = None, None
    if is_image(original.shape):
        png_exact = png_is_exact(example.input, domain)
        png_file = str(path.with_name(png_name(path.stem, png_exact)))
        save_png(example.input, Path(png_file), domain)
        if panel:
            save_panel(path.with_name(f"{path.stem}.panel.png"), original, example, domain, original_logits)
    arrays = dict(input=example.input, original=original, original_class=example.original_class,
                  new_class=example.new_class, changed_dims=example.changed_dims, c=example.c, logits=example.logits,
                  l0=example.l0, l1=example.l1, l2=example.l2, linf=example.linf, confirmed_by=example.confirmed_by,
                  png=Path(png_file).name if png_file else "", png_exact=bool(png_exact), **extra)
    write_whole(path, lambda partial: np.savez(partial, **arrays))
    return png_file, png_exact


def read_found(path: Path) -> Found:
    """An example file written by ExampleWriter, as the search found it (a resumed search's
    earlier examples)."""
    with np.load(path, allow_pickle=False) as data:
        example = Example(data["input"], data["c"], data["changed_dims"], int(data["original_class"]),
                          int(data["new_class"]), data["logits"], int(data["l0"]), float(data["l1"]),
                          float(data["l2"]), float(data["linf"]), str(data["confirmed_by"]))
        png = str(data["png"])
        return Found(example, [int(d) for d in data["manipulated_dims"]], int(data["round"]), str(path),
                     str(path.with_name(png)) if png else None, bool(data["png_exact"]) if png else None,
                     bool(data["off_grid"]), str(data["layer"]) or None)


def example_files(folder: str | Path) -> list[Path]:
    """A search folder's example files, in the order they were found."""
    numbered = [p for p in Path(folder).glob("example_*.npz") if p.stem.removeprefix("example_").isdigit()]
    return sorted(numbered, key=lambda p: int(p.stem.removeprefix("example_")))


class ExampleWriter:
    """Writes example_NNNN.npz (and a PNG for images: .png, or .picture.png when it cannot hold the
    example exactly) under `out_dir` for the first `max_files` examples (None: all), counts the rest,
    and writes retrain.npz on close. `panels` adds a panel to each of the first MAX_PANELS image
    examples; `original_logits`
    (the network's output on the original) adds the original's confidence to it."""

    def __init__(self, out_dir: str | Path, original: np.ndarray, domain: Domain = (0.0, 1.0),
                 max_files: int | None = MAX_FILES, panels: bool = False,
                 original_logits: np.ndarray | None = None, first_number: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.first_number = first_number     # a resumed run numbers its examples after those on disk
        self.max_files = max_files
        self.panels, self.original_logits = panels, original_logits
        self.not_written = 0
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.original = np.asarray(original, dtype=np.float32)
        self.domain = domain
        self.images = is_image(self.original.shape)
        self.inputs: list[np.ndarray] = []
        self.labels: list[int] = []
        if self.images:
            save_png(self.original, self.out_dir / png_name("original", png_is_exact(self.original, domain)), domain)

    def write(self, found: Found) -> Path | None:
        """Save one example; sets and returns its npz path. Past `max_files` examples, only counts it."""
        if self.max_files is not None and len(self.inputs) >= self.max_files:
            self.not_written += 1
            return None
        number = self.first_number + len(self.inputs)
        path = self.out_dir / f"example_{number:04d}.npz"
        found.png_file, found.png_exact = save_example(
            path, found.example, self.original, self.domain, self.panels and number < MAX_PANELS, self.original_logits,
            manipulated_dims=np.asarray(found.dims, np.int64), round=found.round, off_grid=found.off_grid,
            layer=found.layer or "")
        self.inputs.append(found.example.input)
        self.labels.append(found.example.original_class)
        found.input_file = str(path)
        return path

    @property
    def written(self) -> int:
        return len(self.inputs)

    def summary(self) -> dict[str, Any]:
        return {"out": str(self.out_dir), "examples_written": self.written,
                "examples_not_written": self.not_written, "max_files": self.max_files}

    def close(self) -> Path:
        """Write retrain.npz: inputs (N, *shape) float32 and their correct labels (N,) int64, read
        from the example files on disk, so it matches them even when an interrupt came between
        writing an example and counting it."""
        path = self.out_dir / "retrain.npz"
        inputs, labels = [], []
        for example in example_files(self.out_dir):
            with np.load(example) as data:
                inputs.append(data["input"].astype(np.float32))
                labels.append(int(data["original_class"]))
        stacked = np.stack(inputs) if inputs else np.zeros((0,) + self.original.shape, np.float32)
        np.savez(path, inputs=stacked, labels=np.asarray(labels, dtype=np.int64))
        return path

    def __enter__(self) -> "ExampleWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The report's plots, drawn by matplotlib (the optional extra `smtverify[report]`) as PNG bytes.

matplotlib is imported only inside the functions that draw, and only its object-oriented API is
used (a `Figure` with the Agg canvas, never pyplot): no command pays its import time unless it
draws a report with plots, and no global state or display backend is touched, so a report can be
drawn from a worker thread or a machine without a display. Without matplotlib the report is still
written, with `INSTALL_HINT` where the plots would be.
"""
from __future__ import annotations

import importlib.util
import io
from typing import Any, Sequence

INSTALL_HINT = 'plots need matplotlib: pip install "smtverify[report]"'
OUTCOME_COLOURS = {"verified": "#1e8e3e", "falsified": "#c5221f", "unknown": "#e8a000", "misclassified": "#9aa0a6"}
MAX_CLASS_PANELS = 6       # per-class charts drawn at most (evenly chosen sizes beyond it)


def available() -> bool:
    """Whether plots can be drawn here (without importing matplotlib)."""
    return importlib.util.find_spec("matplotlib") is not None


def size_value(row: dict[str, Any], size_name: str) -> float:
    """A batch row's size: summary.json keys it "eps" in either mode (the size's name is the
    summary's "size"), a row keyed by its size's own name is read too."""
    return row["eps"] if "eps" in row else row[size_name]


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(figure) -> bytes:
    """The figure as PNG, without the timestamped metadata, so the same run draws the same bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def accuracy_plot(per_size: Sequence[dict[str, Any]], size_name: str, images: int,
                  clean_accuracy: float | None) -> bytes:
    """Verified accuracy, and the falsified and unknown shares, against eps (or span)."""
    sizes = [size_value(row, size_name) for row in per_size]
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    axes.plot(sizes, [100 * row["verified_accuracy"] for row in per_size], "o-", color=OUTCOME_COLOURS["verified"],
              label="verified accuracy")
    for outcome in ("falsified", "unknown"):
        axes.plot(sizes, [100 * row[outcome] / max(images, 1) for row in per_size], "s--",
                  color=OUTCOME_COLOURS[outcome], label=f"{outcome} share")
    if clean_accuracy is not None:
        axes.axhline(100 * clean_accuracy, color="#5f6b7a", linestyle=":", label="clean accuracy")
    axes.set_xlabel(size_name)
    axes.set_ylabel("% of images")
    axes.set_ylim(-2, 102)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    axes.set_title(f"verified accuracy against {size_name} ({images} images)", fontsize=10)
    figure.tight_layout()
    return _png(figure)


def chosen_sizes(count: int, most: int = MAX_CLASS_PANELS) -> list[int]:
    """Indices of at most `most` of `count` sizes, evenly spread, the first and last always in."""
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def per_class_plot(per_size: Sequence[dict[str, Any]], size_name: str) -> bytes:
    """Per class, a stacked bar of its images' outcomes: one small chart a size, side by side."""
    from matplotlib.ticker import MaxNLocator

    shown = [per_size[i] for i in chosen_sizes(len(per_size))]
    classes = sorted({c for row in shown for c in row.get("per_class", {})}, key=class_order)
    columns = min(len(shown), 3)
    rows = -(-len(shown) // columns)
    figure = _figure(3.6 * columns + 0.6, 2.9 * rows + 0.5)
    axes_list = figure.subplots(rows, columns, squeeze=False, sharey=True)
    for k, axes in enumerate(axes_list.reshape(-1)):
        if k >= len(shown):
            axes.set_visible(False)
            continue
        row = shown[k]
        bottom = [0] * len(classes)
        for outcome, colour in OUTCOME_COLOURS.items():
            counts = [row["per_class"].get(c, {}).get(outcome, 0) for c in classes]
            axes.bar(classes, counts, bottom=bottom, color=colour, label=outcome, width=0.8)
            bottom = [b + n for b, n in zip(bottom, counts)]
        axes.set_title(f"{size_name} {size_value(row, size_name):g}", fontsize=10)
        axes.set_xlabel("class", fontsize=9)
        axes.tick_params(labelsize=8)
        axes.set_ylim(0, 1.08 * max([1, *bottom]))      # the tallest bar clear of the frame
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        if k % columns == 0:
            axes.set_ylabel("images", fontsize=9)
    handles, labels = axes_list.reshape(-1)[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(OUTCOME_COLOURS), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.35 / (2.9 * rows + 0.5), 1, 1))
    return _png(figure)


def class_order(name: str) -> tuple[int, Any]:
    """Classes named by numbers in numeric order (2 before 10), others after them by name."""
    return (0, int(name)) if str(name).lstrip("-").isdigit() else (1, str(name))


def cactus_plot(seconds_solved: Sequence[float], instances: int) -> bytes:
    """The competition's cactus plot: instances solved (sat or unsat) within a time, against the time."""
    times = sorted(seconds_solved)
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    if times:
        axes.step([0.0, *times], list(range(len(times) + 1)), where="post", color="#1a73a8")
        axes.plot(times, range(1, len(times) + 1), "o", color="#1a73a8", markersize=3)
    axes.set_xlabel("seconds per instance")
    axes.set_ylabel("instances solved")
    axes.set_ylim(0, max(instances, 1) + 0.5)
    if times and times[-1] / max(times[0], 1e-3) > 100:
        axes.set_xscale("symlog", linthresh=0.01)
    axes.grid(alpha=0.3)
    axes.set_title(f"solved {len(times)} of {instances} instances", fontsize=10)
    figure.tight_layout()
    return _png(figure)

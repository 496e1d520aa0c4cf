"""The report of a batch run: robustness of a dataset per eps (or span) and per class, its plots,
and the counterexamples it saved.

A batch has no one verdict, so its banner gives verified accuracy over the sizes, and says what
"verified" and "falsified" guarantee in the run's mode: in certify mode a proof on the continuous
L-infinity ball, in search mode the grid's guarantee only. The reader should not have to know the
mode to read the numbers right.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..verdict import GRID_GUARANTEE, SAFE_GUARANTEE, UNSAFE_GUARANTEE
from . import plots
from .page import Html, banner, fmt, img, join, key_values, note, paragraph, percent, section, table
from .sections import GALLERY_CAP, Shown, checked, classes_line, distances_line, footer, gallery, interrupted, \
    settings_and_versions
from .source import Source, example_fields

UNKNOWN_ROWS = 50          # undecided items listed at most


def batch_guarantee(mode: str) -> str:
    """What the outcomes mean in this mode, the verdicts' guarantees verbatim."""
    verified = (f"verified (SAFE): {SAFE_GUARANTEE}" if mode == "certify" else
                f"verified (SAFE_ON_GRID): {GRID_GUARANTEE}")
    return (f"{verified}. falsified (UNSAFE): {UNSAFE_GUARANTEE}. misclassified: the network gets the image "
            "wrong unperturbed, never counted as verified. unknown: not decided within the item's time.")


def render_batch(source: Source) -> tuple[str, list[str], str]:
    """(title, body parts, footer) of a batch run's report."""
    summary = source.summary
    mode, size = summary.get("mode", "certify"), summary.get("size", "eps")
    per_size = summary.get("per_eps", [])
    images = summary.get("images", 0)
    name = Path(str(summary.get("model", "model"))).stem
    parts = [_banner(summary, per_size, size, name, mode),
             interrupted(source, f"{summary.get('items', '?')} of {summary.get('total_items', '?')} items were "
                         "decided; every count and plot below covers those only."),
             checked(source, [("images", f"{images} ({source.manifest.get('images', 'as given')})"),
                              ("clean accuracy", percent(summary.get("clean_accuracy")))]),
             section("Region and manipulations", _region(source, mode, size)),
             section("Robustness", _robustness_table(per_size, size, images), _plots(per_size, size, images,
                                                                                      summary.get("clean_accuracy"))),
             section("Per class", _per_class_table(per_size, size)),
             section("Counterexamples", *_gallery(source, size)),
             section("Undecided items", _unknown(source, size)),
             settings_and_versions(source)]
    return f"smtverify batch: {name}", parts, footer(source)


def _banner(summary: dict[str, Any], per_size: list[dict[str, Any]], size: str, name: str, mode: str) -> Html:
    if not per_size:
        return banner("NO ITEMS", f"no item of {name} was decided", batch_guarantee(mode), "unknown")
    first, last = per_size[0], per_size[-1]
    if len(per_size) == 1:
        verdict = f"verified accuracy {percent(first['verified_accuracy'])}"
        sizes = f"{size} {fmt(plots.size_value(first, size))}"
    else:
        verdict = f"verified accuracy {percent(first['verified_accuracy'])} \u2192 {percent(last['verified_accuracy'])}"
        sizes = f"{size} {fmt(plots.size_value(first, size))} \u2192 {fmt(plots.size_value(last, size))}"
    how = "certified on L-infinity balls" if mode == "certify" else "searched on DLV grids"
    headline = (f"{summary.get('images', '?')} images of {name}, {how}, {sizes}; clean accuracy "
                f"{percent(summary.get('clean_accuracy'))}")
    return banner(verdict, headline, batch_guarantee(mode), "neutral")


def _region(source: Source, mode: str, size: str) -> Html:
    manifest, summary = source.manifest, source.summary
    sizes = manifest.get("sizes") or [plots.size_value(row, size) for row in summary.get("per_eps", [])]
    domain = manifest.get("domain")
    if mode == "certify":
        return key_values([("region", "the L-infinity ball of radius eps around each image, clipped to the domain"),
                           ("eps", sizes), ("domain", domain)])
    grid = manifest.get("search") or {}
    return key_values([("region", "DLV's grid around each image: chosen features moved by c x span, c in -M..M"),
                       ("span", sizes), ("family", grid.get("family")), ("steps M", grid.get("steps")),
                       ("features a round", grid.get("features")), ("heuristic", grid.get("heuristic")),
                       ("rounds", grid.get("rounds")),
                       ("lattice", f"k/{grid['levels']}" if grid.get("levels") else "default (k/255 for 8-bit images)"),
                       ("domain", domain)])


def _robustness_table(per_size: list[dict[str, Any]], size: str, images: int) -> Html:
    rows = [[plots.size_value(row, size), row["verified"], row["falsified"], row["unknown"], row["misclassified"],
             percent(row["verified_accuracy"]), percent(row["falsified"] / images if images else None)]
            for row in per_size]
    return table([size, "verified", "falsified", "unknown", "misclassified", "verified accuracy", "falsified share"],
                 rows, [True] * 7)


def _plots(per_size: list[dict[str, Any]], size: str, images: int, clean: float | None) -> Html:
    if not per_size:
        return Html("")
    if not plots.available():
        return note(plots.INSTALL_HINT)
    accuracy = plots.accuracy_plot(per_size, size, images, clean)
    classes = plots.per_class_plot(per_size, size)
    return Html('<div class="plots">' + img(accuracy, f"verified accuracy against {size}") +
                img(classes, "outcomes per class") + "</div>")


def _per_class_table(per_size: list[dict[str, Any]], size: str) -> Html:
    """Per class and size: verified of the class's images, and the falsified among them."""
    if not per_size:
        return Html("")
    classes = sorted({c for row in per_size for c in row.get("per_class", {})}, key=plots.class_order)
    rows = []
    for name in classes:
        counts = [row.get("per_class", {}).get(name, {}) for row in per_size]
        total = max((sum(c.values()) for c in counts), default=0)
        rows.append([name, total] + [f"{c.get('verified', 0)} ({c.get('falsified', 0)} falsified)" for c in counts])
    header = ["class", "images"] + [f"verified at {size} {fmt(plots.size_value(row, size))}" for row in per_size]
    return table(header, rows, [False, True] + [True] * len(per_size))


def _gallery(source: Source, size: str) -> list[Html]:
    falsified = [r for r in source.records("item") if r.get("outcome") == "falsified"]
    falsified.sort(key=lambda r: (r.get("eps", 0), r.get("index", 0)))
    if not falsified:
        return [paragraph("No counterexample was found.")] if source.records("item") else []
    shown = []
    for item in falsified[:GALLERY_CAP]:
        npz = source.file(item.get("example_file"))
        fields = example_fields(npz)
        panel = None
        if npz is not None:
            panel = source.png(npz.with_name(npz.name[:-len(".npz")] + ".panel.png"))
            if panel is None and fields.get("png"):
                panel = source.png(npz.with_name(str(fields["png"])))
        example = {"l0": item.get("l0"), "l2": fields.get("l2"), "linf": item.get("linf")}
        shown.append(Shown(panel, classes_line(item.get("label"), item.get("counterexample_class")),
                           [f"image {item.get('index')} at {size} {fmt(item.get('eps'))}", distances_line(example),
                            Path(str(item.get("example_file") or "file missing")).name]))
    intro = paragraph(f"{len(falsified)} counterexamples, each confirmed by onnxruntime; the panel shows the "
                      "original, the counterexample and their difference.")
    return [intro, gallery(shown, len(falsified), "their files are in the run folder's examples/")]


def _unknown(source: Source, size: str) -> Html:
    undecided = [r for r in source.records("item") if r.get("outcome") == "unknown"]
    if not undecided:
        return Html("")
    rows = [[r.get("index"), r.get("eps"), r.get("label"), r.get("verdict"), r.get("seconds")]
            for r in undecided[:UNKNOWN_ROWS]]
    more = len(undecided) - UNKNOWN_ROWS
    return join([table(["image", size, "label", "verdict", "seconds"], rows, [True, True, True, False, True]),
                 note(f"{more} more undecided items: journal.jsonl lists them.") if more > 0 else ""])

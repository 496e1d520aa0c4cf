"""The report of a search run: DLV's verdict on one input, the grids it searched round by round,
and the adversarial examples it found, each as its original / adversarial / difference panel.

Examples are taken from the journal (written as each was found, so an interrupted run shows what
it had), else from the summary, else from the example files in the folder: whichever the run got
to write.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..verdict import GRID_GUARANTEE, SAFE_GUARANTEE, UNSAFE_GUARANTEE
from .page import Html, banner, fmt, img, join, key_values, note, paragraph, section, table
from .sections import GALLERY_CAP, Shown, checked, classes_line, distances_line, footer, gallery, interrupted, \
    settings_and_versions
from .source import Source, example_fields

GUARANTEES = {"SAFE": SAFE_GUARANTEE, "SAFE_ON_GRID": GRID_GUARANTEE, "UNSAFE": UNSAFE_GUARANTEE}
GRID_ROWS = 40             # grids listed at most
SHOWN_ELSEWHERE = {"model", "input", "verdict", "label", "guarantee", "reason", "examples", "rounds", "grids", "out",
                   "complete", "hidden", "per_span", "cells", "grid_note", "dims", "spans", "progress"}


def render_search(source: Source) -> tuple[str, list[str], str]:
    """(title, body parts, footer) of a search run's report."""
    summary = source.summary
    examples = _examples(source)
    label = summary.get("label", source.manifest.get("label"))
    parts = [_banner(summary, label, len(examples)),
             interrupted(source, "the grids and examples below are those searched and found until then; no "
                         "claim is made about the rest of the region."),
             checked(source, [("input", summary.get("input")), ("label", label)]),
             section("Region and manipulations", _region(source)),
             section("Minimal manipulation", _minimal(summary)),
             section("Rounds", _rounds(summary)),
             section("Grids searched", _grids(summary)),
             section("Adversarial examples", *_gallery(source, examples)),
             section("Figures of the search", key_values((k, v) for k, v in summary.items()
                                                         if k not in SHOWN_ELSEWHERE and not isinstance(v, (dict, list)))),
             settings_and_versions(source)]
    name = Path(str(summary.get("model", "model"))).stem
    return f"smtverify search: {name}", parts, footer(source)


def _banner(summary: dict[str, Any], label: Any, shown: int) -> Html:
    """The verdict with its guarantee (the record's; a minimal search's record has none, so its
    verdict's own)."""
    verdict = str(summary.get("verdict", "UNKNOWN"))
    found = summary.get("examples_found", shown)
    headline = (f"class {fmt(label)} of {Path(str(summary.get('input', 'the input'))).name}: "
                f"{fmt(found)} adversarial example{'s' if found != 1 else ''} found")
    points = summary.get("points_evaluated", summary.get("points_evaluated_in_grid"))
    if points is not None:
        headline += f", {fmt(points)} grid points evaluated"
        headline += f" in {fmt(summary['seconds'])} s" if summary.get("seconds") is not None else ""
    if verdict == "INTERRUPTED" and summary.get("round") is not None:
        headline += f", interrupted in round {fmt(summary['round'])}"
    if summary.get("reason"):
        headline += f"; {summary['reason']}"
    return banner(verdict, headline, summary.get("guarantee") or GUARANTEES.get(verdict, "no guarantee: not decided"))


def _region(source: Source) -> Html:
    summary = source.summary
    settings = source.manifest.get("settings") or {}
    pixels = source.manifest.get("pixels")
    span = settings.get("span")
    used = summary.get("span_used")
    lattice = summary.get("levels") if "levels" in summary else settings.get("levels")
    pairs = [("family", settings.get("family")),
             ("span", f"{fmt(span)} (used {fmt(used)})" if used is not None and span is not None and used != span
              else span if span is not None else used),
             ("spans", summary.get("spans")),
             ("steps M", settings.get("steps", summary.get("steps"))),
             ("features", len(pixels) if pixels else settings.get("features")),
             ("feature indices (flat)", pixels), ("heuristic", settings.get("heuristic")),
             ("rounds", settings.get("rounds")), ("paths kept a round", settings.get("paths")),
             ("lattice", f"k/{lattice}" if lattice else "none (continuous spans)"),
             ("grid note", summary.get("grid_note") or None), ("domain", settings.get("domain")),
             ("hidden layer", summary.get("layer") or settings.get("layer")),
             ("continuous region proven (--prove-cells)", settings.get("lift")),
             ("cells", _cells(summary.get("cells")))]
    original = source.png("original.png") or source.png("original.picture.png")
    picture = (Html('<figure class="pixels">' + img(original, "the original input", 168) +
                    "<figcaption>the original input</figcaption></figure>") if original else Html(""))
    return join([paragraph("Each feature moves by c x span, c in -M..M, every grid point evaluated in order of "
                           "closeness; rounds add features around the points of smallest margin."),
                 key_values(pairs), picture])


def _cells(cells: Any) -> Any:
    if isinstance(cells, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in cells.items() if not isinstance(v, (dict, list)))
    return cells


def _minimal(summary: dict[str, Any]) -> Html:
    if "per_span" not in summary:
        return Html("")
    rows = [[r.get("span"), r.get("verdict"), r.get("points_evaluated"), r.get("min_pixels")]
            for r in summary.get("per_span") or [] if isinstance(r, dict)]
    return join([key_values([("smallest span with an example", summary.get("min_span") or "none on the ladder"),
                             ("fewest changed pixels", summary.get("min_pixels")),
                             ("at span", summary.get("min_pixels_span"))]),
                 table(["span", "verdict", "points evaluated", "fewest changed pixels"], rows, [True, False, True, True])
                 if rows else ""])


def _rounds(summary: dict[str, Any]) -> Html:
    rows = [[r.get("round"), r.get("features"), r.get("grids"), r.get("points_evaluated"), r.get("examples"),
             r.get("best_margin")] for r in summary.get("rounds") or []]
    return table(["round", "features", "grids", "points evaluated", "examples", "smallest margin"], rows,
                 [True] * 6) if rows else Html("")


def _grids(summary: dict[str, Any]) -> Html:
    grids = summary.get("grids") or []
    rows = [[g.get("round"), g.get("path"), g.get("verdict"), g.get("grid_points"), g.get("points_evaluated"),
             g.get("evaluator"), g.get("seconds"), g.get("dims")] for g in grids[:GRID_ROWS]]
    more = len(grids) - GRID_ROWS
    return join([table(["round", "path", "verdict", "grid points", "evaluated", "evaluator", "seconds", "features"],
                       rows, [True, True, False, True, True, False, True, False]) if rows else "",
                 note(f"{more} more grids: summary.json lists them.") if more > 0 else ""])


def _examples(source: Source) -> list[dict[str, Any]]:
    """The examples the run wrote: journalled, else summarised, else the files themselves."""
    found = source.records("example") or [e for e in source.summary.get("examples") or [] if isinstance(e, dict)]
    if found or source.folder is None:
        return found
    return [{"input_file": path.name, **example_fields(path)} for path in sorted(source.folder.glob("example_*.npz"))]


def _gallery(source: Source, examples: list[dict[str, Any]]) -> list[Html]:
    not_written = source.summary.get("examples_not_written") or 0
    if not examples:
        if source.summary.get("verdict") == "UNSAFE":
            return []
        return [paragraph("No adversarial example was found" + ("." if source.complete else " before the run stopped."))]
    shown = []
    for example in examples[:GALLERY_CAP]:
        npz = source.file(example.get("input_file"))
        panel = None
        if npz is not None:
            panel = source.png(npz.with_name(npz.name[:-len(".npz")] + ".panel.png")) or source.png(example.get("png_file"))
        where = f"round {example['round']}" if example.get("round") is not None else ""
        if example.get("off_grid"):
            where += " (between grid points)"
        lines = [distances_line(example), where, Path(str(example.get("input_file") or "file missing")).name]
        shown.append(Shown(panel, classes_line(example.get("original_class"), example.get("new_class")),
                           [line for line in lines if line]))
    parts = [paragraph(f"{len(examples)} examples written, each confirmed by onnxruntime; the panel shows the "
                       "original, the example and their difference."),
             gallery(shown, len(examples), "their files are in the run folder")]
    if not_written > 0:
        parts.append(note(f"{not_written} more examples were found but not written (--max-files)."))
    return parts

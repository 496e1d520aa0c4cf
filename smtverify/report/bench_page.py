"""The report of a bench run: every competition instance's verdict against its expected one, the
cactus plot of solved instances against time, and any wrong answer shown first.

A wrong answer is the one fact a bench run must not bury, so the banner turns red and names how
many; the table below lets a reader find each one and its counterexample file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..verdict import SAFE_GUARANTEE, UNSAFE_GUARANTEE
from . import plots
from .page import Html, banner, img, join, key_values, note, section, table
from .sections import checked, footer, interrupted, settings_and_versions
from .source import Source

BENCH_GUARANTEE = (f"unsat: {SAFE_GUARANTEE}. sat: {UNSAFE_GUARANTEE}. A wrong answer is one that contradicts the "
                   "instance's expected verdict in instances.csv.")


def render_bench(source: Source) -> tuple[str, list[str], str]:
    """(title, body parts, footer) of a bench run's report."""
    summary = source.summary
    instances = source.records("instance")
    parts = [_banner(summary),
             interrupted(source, f"{len(instances)} of {summary.get('of', '?')} instances were decided; the rest "
                         "were not run (--resume goes on)."),
             checked(source, [("instances", source.manifest.get("instances"))]),
             section("Verdicts", _counts(summary), _cactus(instances, summary)),
             section("Instances", _table(instances)),
             settings_and_versions(source)]
    name = Path(str(source.manifest.get("instances") or "instances.csv")).parent.name or "bench"
    return f"smtverify bench: {name}", parts, footer(source)


def _banner(summary: dict[str, Any]) -> Html:
    solved, total, wrong = summary.get("solved", 0), summary.get("instances", 0), summary.get("wrong", 0)
    verdict = f"{wrong} WRONG" if wrong else f"solved {solved} of {total}"
    tone = "unsafe" if wrong else "safe" if solved == total else "unknown"
    headline = (f"solved {solved} of {total} (sat {summary.get('sat', 0)}, unsat {summary.get('unsat', 0)}), "
                f"timeout {summary.get('timeout', 0)}, unknown {summary.get('unknown', 0)}, "
                f"error {summary.get('error', 0)}, wrong {wrong}, total {summary.get('total_seconds', 0)} s")
    return banner(verdict, headline, BENCH_GUARANTEE, tone)


def _counts(summary: dict[str, Any]) -> Html:
    return key_values((k, summary.get(k)) for k in ("instances", "solved", "sat", "unsat", "timeout", "unknown",
                                                     "error", "wrong", "total_seconds"))


def _cactus(instances: list[dict[str, Any]], summary: dict[str, Any]) -> Html:
    if not instances:
        return Html("")
    if not plots.available():
        return note(plots.INSTALL_HINT)
    solved = [_seconds(r) for r in instances if r.get("verdict") in ("sat", "unsat")]
    picture = plots.cactus_plot(solved, summary.get("instances", len(instances)))
    return Html('<div class="plots">' + img(picture, "instances solved against time") + "</div>")


def _seconds(record: dict[str, Any]) -> float:
    """The journal keeps the results table's text ("0.123"); a number is taken as it is."""
    try:
        return float(record.get("seconds") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def is_wrong(record: dict[str, Any]) -> bool:
    """`correct` is "false" (the journal's text, as in results.csv) or False."""
    return str(record.get("correct")).lower() == "false"


def _table(instances: list[dict[str, Any]]) -> Html:
    """Wrong answers first, then in the order run."""
    ordered = sorted(enumerate(instances), key=lambda pair: (not is_wrong(pair[1]), pair[0]))
    rows = [[r.get("row", i + 1), Path(str(r.get("onnx", ""))).name, Path(str(r.get("vnnlib", ""))).name,
             r.get("expected") or "?", r.get("verdict"), _correct(r.get("correct")), _seconds(r),
             r.get("detail") or "", r.get("counterexample") or ""] for i, r in ordered]
    return join([table(["#", "network", "property", "expected", "verdict", "correct", "seconds", "detail",
                        "counterexample"], rows, [True, False, False, False, False, False, True, False, False])
                 if rows else ""])


def _correct(value: Any) -> str:
    """yes, WRONG, or a dash where nothing was expected or nothing solved."""
    word = str(value).lower() if value not in (None, "") else ""
    return {"true": "yes", "false": "WRONG"}.get(word, "–")

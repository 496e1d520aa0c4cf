"""The HTML of a report page: escaping, tables, images and the document around them.

A report is one file that must open anywhere, years later, offline: so every image is inline (a
base64 data URI), the style sheet is in the page, nothing is fetched and no script runs. Every
value that comes from a run (paths, class names, messages) goes through `esc`; only the fragments
built here are trusted markup, marked by the `Html` type so the two are never confused.
"""
from __future__ import annotations

import base64
import math
from html import escape
from typing import Any, Iterable, Sequence

TONES = {"SAFE": "safe", "unsat": "safe", "SAFE_ON_GRID": "grid", "UNSAFE": "unsafe", "sat": "unsafe",
         "ERROR": "error", "error": "error"}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1d2327;
       background: #f6f7f9; line-height: 1.4; }
main { max-width: 1120px; margin: 0 auto; padding: 20px 28px 40px; background: #fff; }
h1 { font-size: 1.5em; margin: 0.2em 0 0.6em; }
h2 { font-size: 1.15em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #dde1e6; padding-bottom: 0.2em; }
.banner { border-radius: 6px; padding: 14px 18px; margin: 0 0 14px; border-left: 8px solid; }
.banner .verdict { font-size: 1.7em; font-weight: 700; letter-spacing: 0.02em; }
.banner .headline { font-size: 1.05em; margin-top: 2px; }
.banner .guarantee { margin-top: 8px; font-size: 0.92em; }
.safe { background: #e7f6ea; border-color: #1e8e3e; }
.grid { background: #e8f3f8; border-color: #1a73a8; }
.unsafe { background: #fdecea; border-color: #c5221f; }
.unknown { background: #fff6e0; border-color: #e8a000; }
.error, .neutral { background: #eef0f3; border-color: #5f6b7a; }
.note { padding: 8px 12px; border-radius: 4px; margin: 8px 0; }
.note.warn { background: #fff6e0; border: 1px solid #e8a000; }
.note.info { background: #eef0f3; border: 1px solid #c9ced6; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 0.9em; }
th, td { border: 1px solid #dde1e6; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { width: 13em; }
code, .mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.92em; word-break: break-all; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { display: inline-block; margin: 0; padding: 6px; border: 1px solid #dde1e6; border-radius: 4px;
         background: #fff; }
figure img { display: block; max-width: 100%; }
figure.pixels img { image-rendering: pixelated; }
figcaption { font-size: 0.85em; margin-top: 4px; }
figcaption .classes { font-weight: 700; }
.plots img { max-width: 100%; margin: 4px 8px 8px 0; }
footer { margin-top: 2em; font-size: 0.8em; color: #5f6b7a; }
"""


class Html(str):
    """Markup built by this module (or from its pieces): inserted as it is, never escaped again."""


def esc(value: Any) -> Html:
    """Any value as text between tags: numbers formatted, &, < and > escaped (quotes need not be
    outside attributes, so a guarantee's words stay searchable in the file as they are)."""
    return value if isinstance(value, Html) else Html(escape(fmt(value), quote=False))


def fmt(value: Any) -> str:
    """Numbers short but exact enough to compare (6 significant digits); None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.2f}%"


def tone_of(verdict: str) -> str:
    """The banner's colour class: proven, on the grid, a counterexample, undecided or an error."""
    return TONES.get(verdict, "unknown")


def join(parts: Iterable[str]) -> Html:
    """Fragments one after the other; empty ones left out, so an empty join is empty."""
    return Html("\n".join(p for p in parts if p))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, width: int | None = None) -> Html:
    """An inline PNG: the page needs no file beside it."""
    size = f' width="{width}"' if width else ""
    return Html(f'<img src="{data_uri(png)}" alt="{escape(alt)}"{size}>')


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None,
          cls: str = "") -> Html:
    """A table of escaped cells; `numeric` right-aligns the columns it marks."""
    numeric = list(numeric or [False] * len(header))
    align = [' class="num"' if n else "" for n in numeric]
    head = "".join(f"<th{a}>{esc(h)}</th>" for h, a in zip(header, align))
    body = "".join("<tr>" + "".join(f"<td{a}>{esc(c)}</td>" for c, a in zip(row, align)) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return Html(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def key_values(pairs: Iterable[tuple[str, Any]]) -> Html:
    """A two-column table: what, and its value (None values left out)."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in pairs if v is not None)
    return Html(f'<table class="kv"><tbody>{rows}</tbody></table>') if rows else Html("")


def code(text: Any) -> Html:
    return Html(f"<code>{esc(text)}</code>")


def paragraph(*parts: Any) -> Html:
    return Html("<p>" + "".join(esc(p) for p in parts) + "</p>")


def note(text: Any, kind: str = "info") -> Html:
    """A boxed remark: "warn" for what limits the results (an interrupted run), "info" otherwise."""
    return Html(f'<div class="note {kind}">{esc(text)}</div>')


def section(title: str, *parts: str) -> Html:
    """A titled part of the page; empty when it has nothing to show."""
    body = "\n".join(p for p in parts if p)
    return Html(f"<section><h2>{esc(title)}</h2>\n{body}\n</section>") if body else Html("")


def banner(verdict: str, headline: str, guarantee: Any, tone: str | None = None) -> Html:
    """The verdict, large, with one line of what was asked and what the verdict guarantees, verbatim."""
    klass = tone or tone_of(verdict)
    return Html(f'<div class="banner {klass}" id="verdict"><div class="verdict">{esc(verdict)}</div>'
                f'<div class="headline">{esc(headline)}</div>'
                f'<div class="guarantee">{esc(guarantee)}</div></div>')


def figure(picture: str, caption_lines: Sequence[Any], first_bold: bool = True) -> Html:
    """One picture with its caption lines; the first (the classes) bold."""
    lines = [f'<span class="classes">{esc(line)}</span>' if i == 0 and first_bold else esc(line)
             for i, line in enumerate(caption_lines)]
    return Html(f"<figure>{picture}<figcaption>{'<br>'.join(lines)}</figcaption></figure>")


def document(title: str, body: Iterable[str], footer: str) -> str:
    """The whole page: no external resource, no script."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{esc(title)}</h1>\n" + "\n".join(p for p in body if p) +
            f"\n<footer>{esc(footer)}</footer>\n</main>\n</body>\n</html>\n")

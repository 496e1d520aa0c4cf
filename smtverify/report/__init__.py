"""One self-contained HTML report per run: the verdict and what it guarantees, the region and the
manipulations, a gallery of examples, the proven margin, and for a batch its robustness table and
plots (issue 21, item 5).

Two entry points: `write_report(folder)` for a run folder (search, batch, bench: run_folder.py
describes its files), and `write_record_report(path, command, record)` for the commands that write
no folder (certify, vnnlib: their --json record). A report is drawn from those files alone, so
`smtverify report RUN_DIR` draws it again, the same, at any later time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..atomic import write_whole
from ..errors import SmtVerifyError
from ..run_folder import REPORT
from .page import document
from .source import COMMANDS, Source, read_folder

__all__ = ["render_record", "render_source", "write_record_report", "write_report"]

Renderer = Callable[[Source], "tuple[str, list[str], str]"]


def _renderers() -> dict[str, Renderer]:
    """Each command's page, imported when a report is drawn (not when a command starts)."""
    from .batch_page import render_batch
    from .bench_page import render_bench
    from .record_page import render_certify, render_vnnlib
    from .search_page import render_search

    return {"batch": render_batch, "search": render_search, "bench": render_bench, "certify": render_certify,
            "vnnlib": render_vnnlib}


def render_source(source: Source) -> str:
    """The report's HTML."""
    title, parts, footer = _renderers()[source.command](source)
    return document(title, parts, footer)


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Render a run folder's report into folder/report.html (or `out`); returns its path."""
    source = read_folder(folder)
    path = Path(out) if out is not None else source.folder / REPORT
    return _write(path, render_source(source))


def render_record(command: str, record: dict[str, Any], manifest: dict[str, Any] | None = None,
                  folder: str | Path | None = None) -> str:
    """The report of one command's --json record (with its run's manifest and folder when it has one)."""
    if command not in COMMANDS:
        raise SmtVerifyError(f"no report for the command '{command}' (one of {', '.join(COMMANDS)})",
                             field="command")
    journal: list[dict[str, Any]] = []
    if folder is not None:
        from ..run_folder import JOURNAL, Journal

        journal = Journal(Path(folder) / JOURNAL).records()
    source = Source(command, record, manifest or {}, journal, Path(folder) if folder is not None else None)
    return render_source(source)


def write_record_report(path: str | Path, command: str, record: dict[str, Any]) -> Path:
    """Write the report of a certify or vnnlib record (`--report FILE.html`); returns its path."""
    return _write(Path(path), render_record(command, record))


def _write(path: Path, html: str) -> Path:
    """Written whole (renamed into place): a report is never half a page."""
    if not path.parent.is_dir():
        raise SmtVerifyError(f"the folder {path.parent} does not exist", file=path, field="--out")
    return write_whole(path, lambda partial: partial.write_text(html, encoding="utf-8"))

"""`smtverify report`: draw a run folder's HTML report again (report/), from its files alone.

Runs write their report as they end; this command is for a report drawn before matplotlib was
installed, a folder copied from another machine, or a run killed before it could write one.
"""
from __future__ import annotations

import argparse
from typing import Callable

from .cli_common import check_writable, emit


def add_report_parser(command: Callable[[str, str, str], argparse.ArgumentParser]) -> None:
    """The `report` command's arguments (`command` is cli_args.build_parser's maker of commands)."""
    report = command("report", "draw a run folder's self-contained HTML report again (search, batch or bench runs)",
                     "smtverify report smtverify-batch --out batch-report.html")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder: run.json, summary.json, journal.jsonl "
                        "and the examples a search, batch or bench run wrote")
    report.add_argument("--out", metavar="FILE.html", help="where to write the report (default RUN_DIR/report.html)")


def report_command(args: argparse.Namespace) -> int:
    """Render and write the report; print its path (with --json, {"report": path})."""
    from .report import write_report

    check_writable(args.out, "--out")
    path = write_report(args.run_dir, args.out)
    emit(args, {"report": str(path)}, str(path))
    return 0


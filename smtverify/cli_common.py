"""What every command of the command line shares: printing its one record, the time left of
--timeout, and the checks of values that several commands take (domains, number lists, output
folders). Commands live in cli.py and the cli_*.py modules beside it."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SmtVerifyError


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """The command's result on stdout: its text, or with --json its one JSON object."""
    print(json.dumps(record) if args.json else text)
    args.emitted = True


def interrupted(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """What an interrupted run did: with --json its record on stdout (still one object), else its
    text on stderr; the run then ends with exit 130."""
    if args.json:
        emit(args, record, text)
    else:
        print(text, file=sys.stderr)


def time_left(args: argparse.Namespace) -> float:
    """What is left of --timeout: the clock starts when the command does, so reading the model and
    the input count too, and the command as a whole ends close to its timeout."""
    return max(0.0, args.timeout - (time.perf_counter() - args.started))


def check_writable(path: str | None, field: str) -> None:
    """Before any work: an output file can be written where it is asked for (its folder exists and
    is writable, and it is not itself a folder), so hours of work are not lost at the end."""
    if not path:
        return
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise SmtVerifyError(f"the folder {Path(path).parent} does not exist", file=path, field=field)
    if Path(path).is_dir():
        raise SmtVerifyError("is a folder; give a file name", file=path, field=field)
    if not os.access(folder, os.W_OK):
        raise SmtVerifyError(f"the folder {folder} is not writable", file=path, field=field)


def number_list(text: str, field: str, positive: bool) -> list[float]:
    """A comma-separated list of finite numbers (spans, radii), each positive or non-negative."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise SmtVerifyError(f"{field} must be numbers V1,V2,..., not '{text}'", field=field) from None
    if not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in values):
        least = "positive" if positive else "non-negative"
        raise SmtVerifyError(f"{field} {text}: every value must be a {least} finite number", field=field)
    return values


def domain(text: str) -> tuple[float, float]:
    """--domain LO,HI: finite, LO below HI."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise SmtVerifyError(f"--domain must be LO,HI, not '{text}'", field="--domain") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SmtVerifyError(f"--domain {text}: LO and HI must be finite numbers", field="--domain")
    if not low < high:
        raise SmtVerifyError(f"--domain {text}: LO must be below HI", field="--domain")
    return low, high


def check_within_domain(x: np.ndarray, bounds: tuple[float, float], input_path: str) -> None:
    outside = np.flatnonzero((x.reshape(-1) < bounds[0]) | (x.reshape(-1) > bounds[1]))
    if outside.size:
        raise SmtVerifyError(f"the input lies outside the domain {list(bounds)}: value {x.reshape(-1)[outside[0]]:.6g} "
                             f"at flat index {outside[0]} ({outside.size} values outside)", file=input_path,
                             field="--domain")


def write_run_report(folder, debug: bool = False) -> None:
    """The run folder's HTML report. The run's results are complete without it, so a failure to
    draw it is one warning line (the traceback with --debug), not the end of the command."""
    from .report import write_report

    try:
        write_report(folder.path)
    except Exception as error:
        if debug:
            raise
        print(f"smtverify: warning: the report could not be drawn ({type(error).__name__}: {error}); the run's "
              f"files are complete, and `smtverify report {folder.path}` tries again", file=sys.stderr)

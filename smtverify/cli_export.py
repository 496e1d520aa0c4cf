"""`smtverify export`: a run folder's counterexamples as npz (to retrain on), PNGs with labels.csv
(for `batch --images`), the competition's counterexample text, or a JSON manifest (export_run.py).
Its parser lives here beside the command, so the export's options and their text stay together."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from .cli_common import emit

FORMAT_HELP = {"npz": "x (float32, the network's layout), y_true, y_adv, originals, delta, dims, c, distances, "
                      "source: one array each, loads with np.load(allow_pickle=False)",
               "png": "a folder of exact 8-bit PNGs and labels.csv (file,label: the correct class), readable by "
                      "`smtverify batch MODEL --images FOLDER`; examples off the 8-bit lattice are skipped and counted",
               "vnncomp": "a folder of the competition's counterexample files (sat, X_i and Y_j values)",
               "json": "the manifest: model and sha256, region, verdict, guarantee, versions, each example"}


def add_export_parser(command: Callable[[str, str, str], argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """`smtverify export RUN_DIR --format F [--to PATH] [--model MODEL] [--force]`."""
    export = command("export", "write a run folder's counterexamples (search, batch or bench) as npz, PNG, the "
                     "competition's text or a JSON manifest; every example is re-run by onnxruntime first and "
                     "left out (and named) unless it is still adversarial",
                     "smtverify export smtverify-batch --format npz --to retrain.npz")
    export.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (a search's --out, a batch's, a bench's)")
    export.add_argument("--format", required=True, choices=("npz", "png", "vnncomp", "json"),
                        help="; ".join(f"{name}: {text}" for name, text in FORMAT_HELP.items()))
    export.add_argument("--to", help="the file (npz, json) or folder (png, vnncomp) to write (default "
                        "RUN_DIR/export/counterexamples.npz, png/, vnncomp/ or manifest.json)")
    export.add_argument("--model", help="the run's model, when it moved or the folder has no run.json: an ONNX file "
                        "or a bundled model's name; its sha256 must match the one the run recorded")
    export.add_argument("--force", action="store_true", help="replace an earlier export at the destination")
    return export


def export_command(args: argparse.Namespace) -> int:
    """Export, then say what was written, what was left out (failed the re-check) and skipped (the
    format cannot hold it exactly), each with its reason: nothing is dropped silently."""
    from .export_run import export_run
    from .resources import resolve_model

    model = str(resolve_model(args.model)) if args.model else None
    record = export_run(args.run_dir, args.format, args.to, model, args.force)
    emit(args, record, export_text(record))
    return 0


def export_text(record: dict[str, Any]) -> str:
    """What an export wrote, in lines for people."""
    lines = [f"exported {record['exported']} of {record['found']} examples of the {record['command']} run in "
             f"{record['run']} as {record['format']} to {record['to']}"]
    if record["model_sha256"]:
        lines.append(f"  model {record['model']} (sha256 {record['model_sha256'][:16]}...), every example re-run "
                     "by onnxruntime")
    if record["format"] == "png":
        lines.append(f"  {len(record['files']) - 1} PNG files and labels.csv")
    for name, what in (("left_out", "left out (failed the re-check)"), ("skipped", f"skipped (not exact as {record['format']})")):
        if record[name]:
            lines.append(f"  {len(record[name])} {what}:")
            lines += [f"    {item['file']}: {item['reason']}" for item in record[name][:10]]
            if len(record[name]) > 10:
                lines.append(f"    ... {len(record[name]) - 10} more (--json lists them all)")
    return "\n".join(lines)

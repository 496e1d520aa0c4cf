"""The `smtverify` command line. Results go to stdout, progress and errors to stderr.

Every bad input is reported in one line naming the file, node or field at fault, with exit status 2
(no traceback unless --debug).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .cli_args import EXIT_ERROR, attached_negative_values, build_parser
from .cli_batch import batch_command
from .cli_common import check_within_domain, check_writable, domain, emit, interrupted, time_left, write_run_report
from .cli_export import export_command
from .cli_report import report_command
from .cli_search import search_command
from .cli_text import certify_text, demo_text, eval_batch_text, info_text, models_text, result_details
from .errors import SmtVerifyError
from .verdict import Verdict

EXIT_INTERNAL = 3     # a defect of smtverify's own: reported in one line, traceback with --debug
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def main(argv: list[str] | None = None) -> int:
    previous = _interrupt_on_sigterm()
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(attached_negative_values(sys.argv[1:] if argv is None else list(argv)))
    args.started, args.emitted = started, False
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()          # a closed pipe shows here, while it can still be handled
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_PIPE_CLOSED
    except KeyboardInterrupt:
        print("smtverify: interrupted", file=sys.stderr)
        if args.json and not args.emitted:
            print(json.dumps({"error": "interrupted", "exit_status": EXIT_INTERRUPTED}))
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        named = isinstance(error, SmtVerifyError) or _is_file_problem(error)
        message = "error: " + _file_problem(error) if _is_file_problem(error) else \
            "error: " + str(error) if named else _internal(error)
        print(f"smtverify: {message}", file=sys.stderr)
        status = EXIT_ERROR if named else EXIT_INTERNAL
        if args.json and not args.emitted:      # a reader of stdout still gets its one object
            print(json.dumps({"error": message, "exit_status": status}))
        return status


def _is_file_problem(error: BaseException) -> bool:
    """An operating-system error about a named file (no permission, a folder where a file goes, a
    full disk): the user's to fix, not a defect."""
    return isinstance(error, OSError) and bool(getattr(error, "filename", None))


def _file_problem(error: OSError) -> str:
    return f"{error.filename}: {error.strerror or error}"


def _interrupt_on_sigterm():
    """SIGTERM (a scheduler's or `kill`'s) ends a run as Ctrl-C does: what it wrote is kept, a
    batch prints what it did, and the exit status is 130. Returns the handler it replaced (None
    off the main thread, where signals cannot be handled)."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)


def _internal(error: BaseException) -> str:
    return (f"internal error: {type(error).__name__}: {error} (a defect of smtverify; "
            "--debug shows the traceback)")


def _discard_stdout() -> None:
    """After the reader of stdout went away (`smtverify ... | head -1`): whatever is still buffered
    goes to /dev/null, so the interpreter's own flush at exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# ----- info ------------------------------------------------------------------------------------
def _info(args: argparse.Namespace) -> int:
    from .onnx_import import load_onnx

    network = load_onnx(args.model, strict=False)
    layers = [{"name": layer.name, "op_type": layer.op_type, "shape": network.onnx_shape(layer.shape),
               "supported": layer.operator is not None} for layer in network.order]
    counts = Counter(layer.op_type for layer in network.order)
    record = {
        "model": network.path, "opset": network.opset,
        "input": {"name": network.input_name, "shape": network.onnx_shape(network.input_shape)},
        "output": {"name": network.output_name, "shape": network.onnx_shape(network.layers[network.output_name].shape)},
        "layers": layers, "operator_counts": dict(sorted(counts.items())),
        "fully_supported": network.supported, "problems": [str(p) for p in network.problems],
    }
    emit(args, record, info_text(record))
    if not network.supported:     # the table above lists them all; the first is the error
        raise network.problems[0]
    return 0


# ----- eval ------------------------------------------------------------------------------------
def _eval(args: argparse.Namespace) -> int:
    """One input: its output and class. A batch (.npz, or .npy with a batch axis): each class, and
    the accuracy where the file holds labels (an example file's label is its original class)."""
    from .inputs import read_inputs
    from .onnx_import import load_onnx

    network = load_onnx(args.model)
    inputs, labels = read_inputs(args.input, network)
    outputs = network.logits(inputs, np.float64 if args.dtype == "float64" else np.float32)
    classes = [int(c) for c in np.argmax(outputs, axis=1)]
    record: dict[str, Any] = {"model": network.path, "input": args.input, "dtype": args.dtype}
    if len(inputs) == 1 and labels is None:
        record["output"], record["class"] = [float(v) for v in outputs[0]], classes[0]
        text = f"output: {np.array2string(outputs[0], precision=6, max_line_width=100)}\nclass:  {classes[0]}"
    else:
        record.update(count=len(inputs), classes=classes)
        text = eval_batch_text(classes, labels)
        if labels is not None:
            record.update(labels=[int(v) for v in labels], correct=int(np.sum(np.array(classes) == labels)),
                          accuracy=float(np.mean(np.array(classes) == labels)))
    emit(args, record, text)
    return 0


# ----- vnnlib, bench, certify, encode --------------------------------------------------------
def _vnnlib(args: argparse.Namespace) -> int:
    """The competition's verdict word first on stdout (a harness may read only that line); with
    --json, one object holding it, the result and the counterexample instead."""
    from . import confirm
    from .bench import Instance, decide
    from .progress_display import certification_progress, wanted

    check_writable(args.out, "--out")
    check_writable(args.report, "--report")
    instance = Instance(Path(args.model), Path(args.property), args.timeout, None)
    with certification_progress(wanted(args.quiet)) as listener:
        result, failure = decide(instance, time_left(args), progress=listener)
    if result is None:
        if args.out:
            confirm.write_vnncomp_result(args.out, "error")
        status = EXIT_INTERNAL if failure.internal else EXIT_ERROR
        print(json.dumps({"result": "error", "error": failure.message, "exit_status": status}) if args.json
              else "error", flush=True)
        _report_failure(failure, args.debug)
        return status
    word = result.verdict.vnncomp
    if args.out:      # first, so that a reader who stops after the first line loses nothing
        confirm.write_vnncomp_result(args.out, word, result.counterexample)
    if args.report:
        _write_record_report(args.report, "vnnlib", _vnnlib_record(args, result))
    if args.json:
        print(json.dumps(_vnnlib_record(args, result)))
    else:
        print(word, flush=True)
        print(result_details(result))
    return 0


def _vnnlib_record(args: argparse.Namespace, result) -> dict[str, Any]:
    record = {"result": result.verdict.vnncomp, "model": args.model, "property": args.property, **result.summary()}
    if result.counterexample is not None:
        cex = result.counterexample
        record["counterexample"] = {"inputs": [float(v) for v in cex.input.reshape(-1)],
                                    "outputs": [float(v) for v in cex.output.reshape(-1)],
                                    "confirmed_by": cex.executor}
    if args.out:
        record["out"] = args.out
    return record


def _write_record_report(path: str, command: str, record: dict[str, Any]) -> None:
    """--report: the decision's HTML page, drawn from its record."""
    from .report import write_record_report

    write_record_report(path, command, {**record, "report": path})


def _report_failure(failure, debug: bool) -> None:
    """One line on stderr; an internal error's traceback before it with --debug."""
    if not failure.internal:
        print(f"smtverify: error: {failure.message}", file=sys.stderr)
        return
    if debug:
        print(failure.traceback, end="", file=sys.stderr)
    print(f"smtverify: {failure.message}" + ("" if debug else " (a defect of smtverify; --debug shows the traceback)"),
          file=sys.stderr)


def _bench(args: argparse.Namespace) -> int:
    """Every instance in a run folder: journalled as it goes, resumable, summarised at the end or
    on an interrupt (which keeps every row and exits 130)."""
    from .bench import read_instances, run
    from .progress_display import bench_progress, wanted
    from .run_folder import RunFolder, sha256_of_file

    instances = read_instances(args.instances)
    identity = {"instances": str(args.instances), "instances_sha256": sha256_of_file(args.instances),
                "timeout_scale": args.timeout_scale}
    folder = RunFolder.prepare(args.out, "bench", identity, args.resume, args.force)

    verdicts: Counter = Counter()

    def report(outcome, index: int, listener) -> None:
        """A line per instance (a log, unless --quiet); at a terminal, a bar with the counts too."""
        verdicts[outcome.verdict] += 1
        flag = "   <-- WRONG ANSWER" if outcome.wrong else ""
        line = (f"[{index + 1}/{len(instances)}] {outcome.instance.onnx.name} {outcome.instance.vnnlib.name}: "
                f"{outcome.verdict} (expected {outcome.instance.expected or '?'}) {outcome.seconds:.2f}s{flag}")
        if listener is not None:
            listener(line, verdicts)
        elif not args.quiet:
            print(line, file=sys.stderr)
        if outcome.failure is not None:
            _report_failure(outcome.failure, args.debug)

    outcomes = []
    try:
        with bench_progress(wanted(args.quiet), len(instances)) as listener:
            for outcome in run(instances, args.timeout_scale, folder, report=lambda o, i: report(o, i, listener)):
                outcomes.append(outcome)
    except KeyboardInterrupt:
        record, text = _bench_summary(outcomes, len(instances), args.out)
        folder.write_summary(record, complete=False)
        write_run_report(folder, args.debug)
        interrupted(args, {**record, "complete": False}, text)
        raise
    record, text = _bench_summary(outcomes, len(instances), args.out)
    folder.write_summary(record, complete=True)
    write_run_report(folder, args.debug)
    emit(args, record, text)
    return 1 if record["wrong"] else 0


def _bench_summary(outcomes: list, total: int, out: str) -> tuple[dict[str, Any], str]:
    wrong = [o for o in outcomes if o.wrong]
    seconds = sum(o.seconds for o in outcomes)
    words = Counter(o.verdict for o in outcomes)
    record = {"instances": len(outcomes), "of": total, "solved": words["sat"] + words["unsat"], "wrong": len(wrong),
              "total_seconds": round(seconds, 3), "sat": words["sat"], "unsat": words["unsat"],
              "timeout": words["timeout"], "unknown": words["unknown"], "error": words["error"], "out": out}
    text = (f"solved {record['solved']}/{len(outcomes)} (sat {record['sat']}, unsat {record['unsat']}), "
            f"timeout {record['timeout']}, unknown {record['unknown']}, error {record['error']}, "
            f"wrong {len(wrong)}, total {seconds:.1f} s")
    for o in wrong:
        text += f"\n!!! WRONG ANSWER: {o.instance.onnx} {o.instance.vnnlib}: said {o.verdict}, expected {o.instance.expected}"
    saved = " and *.counterexample files" if record["sat"] else ""
    text += f"\nfiles in {out}/: results.csv, journal.jsonl{saved}, summary.json, report.html" + \
        (f"; {total - len(outcomes)} instances left, --resume goes on" if len(outcomes) < total else "")
    return record, text


def _certify(args: argparse.Namespace) -> int:
    from .inputs import read_input
    from .onnx_import import load_onnx
    from .progress_display import certification_progress, wanted
    from .verify import Settings, Verifier, robustness_property

    low, high = domain(args.domain)
    check_writable(args.out, "--out")
    check_writable(args.report, "--report")
    network = load_onnx(args.model)
    x = read_input(args.input, network)
    check_within_domain(x, (low, high), args.input)
    prop = robustness_property(network, x, args.label, args.eps, low, high)
    with certification_progress(wanted(args.quiet)) as listener:
        result = Verifier(network, Settings(timeout=time_left(args))).verify(prop, progress=listener)
    verdict = result.verdict.value if result.verdict in (Verdict.SAFE, Verdict.UNSAFE) else "UNKNOWN"
    record = {"model": network.path, "input": args.input, "label": args.label, "eps": args.eps, **result.summary(),
              "verdict": verdict, "min_margin": result.min_margin}
    if result.counterexample is not None:
        cex = result.counterexample
        record["counterexample"] = {"new_class": int(np.argmax(cex.output)), "linf": float(np.abs(cex.input.reshape(-1) - x.reshape(-1)).max())}
        if args.out:
            with open(args.out, "wb") as handle:        # the name as given (np.save would add .npy)
                np.save(handle, cex.input.reshape(network.input_shape))
            record["counterexample"]["file"] = args.out
    if args.report:
        _write_record_report(args.report, "certify", record)
    emit(args, record, certify_text(record))
    return 0


def _encode(args: argparse.Namespace) -> int:
    from .smtlib import write_smtlib2

    check_writable(args.output, "--output")
    write_smtlib2(args.model, args.property, args.output, args.lp_seconds)
    if args.json:
        print(json.dumps({"model": args.model, "property": args.property, "output": args.output}))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


# ----- models ----------------------------------------------------------------------------------
def _models(args: argparse.Namespace) -> int:
    from .onnx_import import load_onnx
    from .resources import MODELS, model_path

    rows = []
    for name, bundled in MODELS.items():
        network = load_onnx(model_path(name))
        rows.append({"name": name, "input_shape": list(network.input_shape), "classes": network.n_outputs,
                     "about": bundled.about, "test_images": bundled.images_file, "path": str(model_path(name))})
    record = {"models": rows}
    emit(args, record, models_text(record))
    return 0


# ----- demo ------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    summary = run_demo(args.out)
    emit(args, summary, demo_text(summary))
    agree = all(r["same_class"] == r["images"] for r in summary["models"])
    proved = summary["prove"]["verdict"] in ("SAFE", "SAFE_ON_GRID")
    return 0 if agree and summary["find"]["verdict"] == "UNSAFE" and proved else 1


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": _models, "info": _info, "eval": _eval, "vnnlib": _vnnlib, "bench": _bench, "certify": _certify,
    "encode": _encode, "search": search_command, "demo": _demo, "batch": batch_command,
    "export": export_command, "report": report_command}


if __name__ == "__main__":
    sys.exit(main())

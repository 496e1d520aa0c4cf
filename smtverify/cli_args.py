"""The `smtverify` command line's arguments: every command, its options with their help, and one
usage example a command (shown under --help). Values are parsed here; their meaning is checked by
the commands in cli.py."""
from __future__ import annotations

import argparse
import math
import re
from typing import Callable, NoReturn

from . import __version__
from .cli_export import add_export_parser
from .cli_report import add_report_parser
from .errors import SmtVerifyError
from .resources import resolve_model

EXIT_ERROR = 2        # bad input: a named error

_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def attached_negative_values(argv: list[str]) -> list[str]:
    """`--domain -1,1` as `--domain=-1,1`: argparse takes a value that starts with '-' for an
    option unless it is a plain negative number, so ranges and negative numbers written after a
    space would be rejected with a confusing message instead of reaching their own check."""
    attached: list[str] = []
    for token in argv:
        if attached and attached[-1].startswith("--") and "=" not in attached[-1] and _NEGATIVE_VALUE.match(token):
            attached[-1] = f"{attached[-1]}={token}"
        else:
            attached.append(token)
    return attached


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, as every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (--help shows the usage)\n")


def _number(least: str) -> Callable[[str], float]:
    """An argparse type: a finite float above 0 (least='positive') or at least 0 ('non-negative')."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value) or value < 0 or (least == "positive" and value == 0):
            raise argparse.ArgumentTypeError(f"must be a {least} finite number, not {text}")
        return value
    parse.__name__ = f"{least} number"
    return parse


POSITIVE, NON_NEGATIVE = _number("positive"), _number("non-negative")


def COUNT(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text}")
    return int(text)


def _model(text: str) -> str:
    """An argparse type: an ONNX file, or the name of a bundled model (a file of that name wins)."""
    try:
        return str(resolve_model(text))
    except SmtVerifyError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


MODEL_HELP = "ONNX file, or a bundled model's name (`smtverify models` lists them)"


def build_parser() -> argparse.ArgumentParser:
    """Every command and option; `args.command` names the command chosen."""
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (it is shown only when stderr is a terminal anyway), "
                        "nor bench's line per instance")
    parser = Parser(prog="smtverify", description="Safety verification of neural-network "
                                                  "classification decisions (DLV method, Z3).")
    parser.add_argument("--version", action="version", version=f"smtverify {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text,
                              epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)

    _add_models(command)
    _add_info_and_eval(command)
    _add_competition(command)
    _add_certify(command)
    _add_batch(command)
    _add_search(command)
    add_export_parser(command)
    add_report_parser(command)
    demo = command("demo", "the main job on the bundled MNIST CNN: find an adversarial example, prove a smaller "
                   "region safe on the grid, certify an L-infinity ball", "smtverify demo --out smtverify-demo")
    demo.add_argument("--out", default="smtverify-demo", help="folder for the files (default ./smtverify-demo)")
    return parser


Command = Callable[[str, str, str], argparse.ArgumentParser]


def _add_models(command: Command) -> None:
    command("models", "list the bundled models: name, input shape, classes, what each is", "smtverify models")


def _add_info_and_eval(command: Command) -> None:
    info = command("info", "list a model's layers and whether every operator is supported", "smtverify info mnist_cnn")
    info.add_argument("model", type=_model, help=MODEL_HELP)
    evaluate = command("eval", "run a model on one input or a batch and print output and class (accuracy with labels)",
                       "smtverify eval mnist_cnn examples/digit.png --dtype float64")
    evaluate.add_argument("model", type=_model, help=MODEL_HELP)
    evaluate.add_argument("input", help=".npy or image holding one input; or a batch: .npz (inputs x, labels y; "
                                        "smtverify's example and retrain files too) or .npy with a batch axis")
    evaluate.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                          help="the precision the model runs in (default float32, as onnxruntime)")


def _add_competition(command: Command) -> None:
    vnnlib = command("vnnlib", "decide a VNN-LIB property (first stdout line: sat, unsat, unknown, timeout or error; "
                     "with --json, one JSON object holding it)",
                     "smtverify vnnlib net.onnx prop.vnnlib --timeout 60 --out result.txt")
    _add_model_and_property(vnnlib)
    vnnlib.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds (default 60)")
    vnnlib.add_argument("--out", help="write a result file in the competition's format")
    vnnlib.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report of the decision: "
                        "verdict, guarantee, box, counterexample")
    bench = command("bench", "run every instance of an instances.csv and compare with expected verdicts",
                    "smtverify bench instances.csv --timeout-scale 0.5 --out bench-run")
    bench.add_argument("instances", help="instances.csv (onnx,vnnlib,timeout_s[,expected]; paths relative to it)")
    bench.add_argument("--timeout-scale", type=POSITIVE, default=1.0, help="multiply every timeout (default 1)")
    bench.add_argument("--out", default="smtverify-bench", help="run folder: results.csv and journal.jsonl (a row as "
                       "each instance finishes), each counterexample in the competition's format, run.json, "
                       "summary.json, report.html (default ./smtverify-bench); a folder holding files is refused "
                       "without --resume or --force")
    _add_resume_or_force(bench, "skipping finished instances")
    encode = command("encode", "write a VNN-LIB query as self-contained SMT-LIB2 (sat = counterexample)",
                     "smtverify encode net.onnx prop.vnnlib -o query.smt2 --lp-seconds 10")
    _add_model_and_property(encode)
    encode.add_argument("-o", "--output", required=True, help="the .smt2 file to write")
    encode.add_argument("--lp-seconds", type=NON_NEGATIVE, default=30.0,
                        help="time for tightening neuron bounds by LP before encoding (0: none)")


def _add_batch(command: Command) -> None:
    batch = command("batch", "robustness of every image of a dataset: clean and verified accuracy, per eps (or grid "
                    "span) and per class, certified on L-infinity balls or searched on DLV grids",
                    "smtverify batch mnist_cnn --eps-sweep 0.01,0.02,0.05 --limit 100 --out run1")
    batch.add_argument("model", type=_model, help=MODEL_HELP)
    batch.add_argument("--images", help="an .npz of inputs x and labels y (smtverify's retrain.npz too), or a folder "
                       "of images labelled by labels.csv (file,label), by a subfolder per class, or by names "
                       "LABEL_xxx.png (default: the bundled model's test images, one class after another so that --limit N "
                       "covers every class)")
    size = batch.add_mutually_exclusive_group(required=True)
    size.add_argument("--eps", type=NON_NEGATIVE, help="certify: radius of every L-infinity ball")
    size.add_argument("--eps-sweep", metavar="E1,E2,...", help="certify: several radii, each image certified at each")
    size.add_argument("--span", type=POSITIVE, help="search: DLV's grid search with this span (see `smtverify search`)")
    size.add_argument("--span-sweep", metavar="S1,S2,...", help="search: several spans, each image searched at each")
    batch.add_argument("--steps", type=COUNT, help="search: each feature moves by c*span, c in -M..M (default 2)")
    batch.add_argument("--features", type=COUNT, help="search: features chosen per round (default 4)")
    batch.add_argument("--heuristic", choices=("activation", "gradient"),
                       help="search: how features are chosen (default activation)")
    batch.add_argument("--family", choices=("pixel", "brightness", "contrast"),
                       help="search: what a manipulation moves (default pixel)")
    batch.add_argument("--rounds", type=COUNT, help="search: DLV rounds (default 1)")
    batch.add_argument("--levels", type=int, help="search: grids on the lattice k/N (default: 255 for 8-bit images)")
    batch.add_argument("--limit", type=COUNT, help="only the first N images")
    batch.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    batch.add_argument("--timeout", type=POSITIVE, default=3600.0, help="seconds for the whole run (default 3600)")
    batch.add_argument("--item-timeout", type=POSITIVE, default=30.0, help="seconds per image and size (default 30)")
    batch.add_argument("--out", default="smtverify-batch",
                       help="run folder: run.json, journal.jsonl (a line per finished item), items.csv, summary.json, "
                       "examples/, report.html (default ./smtverify-batch); a folder holding files is refused "
                       "without --resume or --force")
    _add_resume_or_force(batch, "skipping finished items")


def _add_model_and_property(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=_model, help=MODEL_HELP)
    parser.add_argument("property", help="VNN-LIB file")


def _add_resume_or_force(parser: argparse.ArgumentParser, resumed: str) -> None:
    """A run folder's two ways past the refusal of a used --out: go on with its run, or start over."""
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help=f"go on with the run in --out, {resumed}")
    again.add_argument("--force", action="store_true", help="start over in a non-empty --out (its run's files cleared)")


def _add_certify(command: Command) -> None:
    certify = command("certify", "L-infinity robustness of one classification decision",
                      "smtverify certify mnist_cnn --input examples/digit.png --label 7 --eps 0.02 --timeout 120")
    certify.add_argument("model", type=_model, help=MODEL_HELP)
    certify.add_argument("--input", required=True, help=".npy or image holding one input")
    certify.add_argument("--label", type=int, required=True, help="the class the decision should keep")
    certify.add_argument("--eps", type=NON_NEGATIVE, required=True, help="radius of the L-infinity ball")
    certify.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    certify.add_argument("--timeout", type=POSITIVE, default=60.0,
                         help="seconds for the whole command, reading the model included (default 60)")
    certify.add_argument("--out", help="save a counterexample (npy) here")
    certify.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report of the decision: "
                         "verdict, guarantee, smallest proven margin, counterexample")


def _add_search(command: Command) -> None:
    search = command("search", "DLV search for adversarial examples on a grid of manipulations "
                     "(SAFE_ON_GRID / UNSAFE / UNKNOWN)",
                     "smtverify search mnist_cnn --input examples/digit.png --label 7 --features 8 --heuristic gradient "
                     "--span 0.1 --steps 3")
    search.add_argument("model", type=_model, help=MODEL_HELP)
    search.add_argument("--input", required=True, help=".npy (optionally with a batch axis of 1) or image")
    search.add_argument("--label", type=int, required=True, help="the class the decision should keep")
    chosen = search.add_mutually_exclusive_group()
    chosen.add_argument("--pixels", help="features to move: flat C-order indices i,j,... into the input")
    chosen.add_argument("--features", type=int, help="features chosen by --heuristic, per round (default 4)")
    search.add_argument("--heuristic", choices=("activation", "gradient"), default="activation",
                        help="activation: DLV's |activation - layer mean|; gradient: saliency (default activation)")
    search.add_argument("--span", type=float, help="one manipulation step (required unless --minimal)")
    search.add_argument("--steps", type=int, required=True, help="M: each feature moves by c*span, c in -M..M")
    search.add_argument("--family", choices=("pixel", "brightness", "contrast"), default="pixel",
                        help="pixel: move the chosen features; brightness, contrast: the whole input (default pixel)")
    search.add_argument("--rounds", type=int, default=1, help="DLV rounds: add --features features per round")
    search.add_argument("--paths", type=int, default=1, help="points kept per round (1 single-path, more multi-path)")
    search.add_argument("--layer", help="search at this hidden layer (an ONNX node output, see `smtverify info`): the "
                        "input grid's region is propagated to it and its misclassified grid points back-mapped to inputs (HiGHS; "
                        "spurious only with a certified proof)")
    search.add_argument("--hidden-features", type=int, default=3, help="--layer: hidden dimensions in its grid "
                        "(DLV's activation heuristic; default 3)")
    search.add_argument("--candidates", type=int, default=16, help="--layer: at most this many misclassified hidden "
                        "points back-mapped to inputs (default 16)")
    search.add_argument("--all", action="store_true", help="collect every example, not only the first")
    search.add_argument("--max-files", type=int, default=1000, help="write (and report) at most this many examples; "
                        "later ones are only counted, as examples_not_written (default 1000)")
    search.add_argument("--minimal", metavar="S1,S2,...", help="minimal manipulation: search the grid of the chosen "
                        "pixels at each of these spans and report the smallest span, and the fewest changed "
                        "pixels, for which it holds an adversarial example (pixel family, one grid a span)")
    search.add_argument("--prove-cells", action="store_true",
                        help="when every grid is safe, prove the continuous region each grid spans with the verifier "
                             "(its hull, else the cells between adjacent grid values): SAFE if all are proven")
    search.add_argument("--lift-timeout", type=float, default=30.0, help="seconds for --prove-cells (default 30)")
    search.add_argument("--lift-cells", type=int, default=64, help="--prove-cells: at most this many cells a grid "
                        "(adjacent cells merged beyond it; default 64)")
    search.add_argument("--budget-points", type=int, help="stop after this many grid points (UNKNOWN)")
    search.add_argument("--timeout", type=POSITIVE, default=60.0, help="seconds (default 60)")
    search.add_argument("--domain", default="0,1", help="valid input range LO,HI (default 0,1)")
    search.add_argument("--levels", type=int, help="pixel grids on the lattice k/N so PNGs hold examples exactly: N "
                        "levels (255: 8-bit), 0 none (default: 255 when every input value is k/255, else none)")
    search.add_argument("--out", default="smtverify-search", help="run folder: examples (npz, PNG, panel) as found, "
                        "retrain.npz, run.json, journal.jsonl, summary.json, report.html (default ./smtverify-search); "
                        "a folder holding files is refused without --resume or --force")
    _add_resume_or_force(search, "with the same options: finished grids are not searched again, the grid in "
                                 "progress goes on from its last checkpoint")

"""`smtverify search`: DLV's grid search for adversarial examples around one input, and its
minimal-manipulation ladder (--minimal); examples are written into the run folder as they are found."""
from __future__ import annotations

import argparse

import numpy as np

from .cli_common import domain, emit, interrupted, number_list, time_left, write_run_report
from .cli_text import interrupted_search_text, minimal_text, search_text
from .errors import SmtVerifyError


def search_command(args: argparse.Namespace) -> int:
    from .export import ExampleWriter, example_files
    from .inputs import read_input
    from .hidden_search import HiddenSettings
    from .onnx_import import load_onnx
    from .progress_display import search_progress, wanted
    from .search import SearchSettings, dlv_search
    from .search_memory import SearchMemory

    network = load_onnx(args.model)
    x = read_input(args.input, network)
    if not 0 <= args.label < network.n_outputs:
        raise SmtVerifyError(f"label {args.label} is not a class of a network with {network.n_outputs} outputs",
                             field="--label")
    dims = _pixels(args.pixels, network.n_inputs) if args.pixels else None
    if args.family != "pixel" and (dims is not None or args.features is not None):
        raise SmtVerifyError(f"the {args.family} family moves the whole input: it takes no --pixels or --features",
                             field="--family")
    for name, value in (("--span", args.span), ("--steps", args.steps), ("--features", args.features),
                        ("--rounds", args.rounds), ("--paths", args.paths), ("--budget-points", args.budget_points),
                        ("--lift-timeout", args.lift_timeout), ("--lift-cells", args.lift_cells),
                        ("--hidden-features", args.hidden_features), ("--candidates", args.candidates),
                        ("--max-files", args.max_files)):
        if value is not None and not value > 0:
            raise SmtVerifyError(f"{name} must be positive, not {value}", field=name)
    spans = number_list(args.minimal, "--minimal", positive=True) if args.minimal else None
    if spans is None and args.span is None:
        raise SmtVerifyError("--span is required (except with --minimal, whose spans are the grids')", field="--span")
    bounds = domain(args.domain)
    if np.any(x < bounds[0]) or np.any(x > bounds[1]):
        raise SmtVerifyError(f"the input lies outside the domain {list(bounds)}", file=args.input, field="--domain")
    settings = SearchSettings(family=args.family, span=min(spans) if spans else args.span, steps=args.steps, features=args.features or min(4, network.n_inputs),
                              heuristic=args.heuristic, rounds=args.rounds, paths=args.paths, collect_all=args.all,
                              max_examples=args.max_files, max_points=args.budget_points, timeout=time_left(args),
                              domain=bounds, levels=args.levels,
                              lift=args.prove_cells, lift_timeout=args.lift_timeout, lift_cells=args.lift_cells,
                              layer=args.layer, hidden=args.layer and HiddenSettings(
                                  args.layer, args.hidden_features, args.steps, args.candidates))
    settings.check(network)              # before the folder is touched
    if spans:
        return _minimal(args, network, x, settings, dims, spans)
    folder = _run_folder(args, network, x, settings, dims)
    memory = SearchMemory(folder.journal, example_files(folder.path))
    writer = ExampleWriter(args.out, x, bounds, args.max_files, panels=True, original_logits=network.logits(x)[0],
                           first_number=memory.kept)
    seen = _Seen()

    def found(example) -> None:
        if writer.write(example) is not None:
            folder.journal.append("example", example.summary())

    try:
        with writer, search_progress(wanted(args.quiet)) as listener:
            report = dlv_search(network, x, args.label, settings, dims, on_found=found,
                                on_progress=seen.listening(listener), memory=memory)
    except KeyboardInterrupt:
        record = {"model": network.path, "input": args.input, "verdict": "INTERRUPTED", **seen.as_dict(),
                  **writer.summary()}
        folder.write_summary(record, complete=False)
        write_run_report(folder, args.debug)
        interrupted(args, {**record, "complete": False}, interrupted_search_text(record, args.out))
        raise
    record = {"model": network.path, "input": args.input, **report.summary(), **writer.summary(),
              "examples_not_written": report.examples_found - writer.written - memory.kept, "out": args.out,
              "resumed": bool(args.resume)}
    folder.write_summary(record, complete=True)
    write_run_report(folder, args.debug)
    emit(args, record, search_text(record))
    return 0


class _Seen:
    """How far the search got, as its progress says: what an interrupted run reports."""

    def __init__(self) -> None:
        self.round, self.points = 0, 0

    def listening(self, then):
        def listen(round_: int, done: int, size: int, found: int) -> None:
            self.round, self.points = round_, done
            if then is not None:
                then(round_, done, size, found)
        return listen

    def as_dict(self) -> dict:
        return {"round": self.round, "points_evaluated_in_grid": self.points}


def _run_folder(args: argparse.Namespace, network, x: np.ndarray, settings, dims: list[int] | None):
    from .search_memory import search_folder

    return search_folder(args.out, network, x, args.label, settings, dims, args.input, args.resume, args.force)


def _minimal(args: argparse.Namespace, network, x: np.ndarray, settings, dims: list[int] | None,
             spans: list[float]) -> int:
    from .export import ExampleWriter
    from .features import select_features
    from .search import minimal_search

    if args.family != "pixel" or args.layer:
        raise SmtVerifyError("--minimal searches input pixels only (no --family or --layer)", field="--minimal")
    if dims is None:
        dims = [int(d) for d in select_features(network, x, settings.features, settings.heuristic, args.label)]
    if args.resume:
        raise SmtVerifyError("a --minimal ladder is not resumed: run it again with --force", field="--resume")
    folder = _run_folder(args, network, x, settings, dims)
    with ExampleWriter(args.out, x, settings.domain, args.max_files, panels=True,
                       original_logits=network.logits(x)[0]) as writer:
        report = minimal_search(network, x, dims, spans, args.steps, args.label, settings, on_found=writer.write)
    record = {"model": network.path, "input": args.input, **report.summary(), "out": args.out}
    folder.write_summary(record, complete=True)
    write_run_report(folder, args.debug)
    emit(args, record, minimal_text(record))
    return 0


def _pixels(text: str, n_inputs: int) -> list[int]:
    try:
        dims = [int(v) for v in text.split(",")]
    except ValueError:
        raise SmtVerifyError(f"--pixels must be integers i,j,..., not '{text}'", field="--pixels") from None
    bad = [d for d in dims if not 0 <= d < n_inputs]
    if bad:
        raise SmtVerifyError(f"pixel index {bad[0]} is outside 0..{n_inputs - 1} (flat C-order indices)",
                             field="--pixels")
    if len(set(dims)) != len(dims):
        raise SmtVerifyError("--pixels lists an index twice", field="--pixels")
    return dims

"""`smtverify batch`: robustness of a whole dataset in a run folder (batch.py), certified on
L-infinity balls (--eps, --eps-sweep) or searched on DLV grids (--span, --span-sweep)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .cli_common import check_within_domain, domain, emit, interrupted, number_list, write_run_report
from .cli_text import batch_text
from .errors import SmtVerifyError


def batch_command(args: argparse.Namespace) -> int:
    """Decide every image in a run folder: journalled as it goes, resumable, summarised at the end
    or on an interrupt (which keeps everything and exits 130)."""
    from .batch import BatchRun, images_identity, write_outputs
    from .onnx_import import load_onnx
    from .progress_display import batch_progress, wanted
    from .run_folder import RunFolder, sha256_of_file

    network = load_onnx(args.model)
    inputs, labels = _batch_images(args, network)
    bounds = domain(args.domain)
    check_within_domain(inputs, bounds, args.images or "the bundled test images")
    decide, sizes, settings = _decider(args, network, bounds)
    identity = {"model": network.path, "model_sha256": sha256_of_file(network.path),
                "images": args.images or "bundled", "images_sha256": images_identity(inputs, labels),
                "mode": decide.mode, "sizes": sizes, "domain": list(bounds), "item_timeout": args.item_timeout,
                "search": settings}
    folder = RunFolder.prepare(args.out, "batch", identity, args.resume, args.force)
    run = BatchRun(network, inputs, labels, sizes, decide, args.item_timeout, folder, bounds)
    size_name = "eps" if decide.mode == "certify" else "span"
    about = {"model": network.path, "dataset": args.images or "bundled test images", size_name: sizes, "out": args.out}
    try:
        with batch_progress(wanted(args.quiet), run.total, len(run.finished)) as listener:
            for _ in run.items(args.started + args.timeout, listener):
                pass
    except KeyboardInterrupt:
        record = write_outputs(folder, run, about, complete=False)
        write_run_report(folder, args.debug)
        interrupted(args, {**record, "complete": False}, batch_text(record, args.out, run.total))
        raise
    record = write_outputs(folder, run, about, complete=len(run.finished) == run.total)
    write_run_report(folder, args.debug)
    emit(args, record, batch_text(record, args.out, run.total))
    return 0


def _decider(args: argparse.Namespace, network, bounds: tuple[float, float]):
    """The mode the options ask for, its sizes, and (search mode) the grid settings recorded in the
    manifest."""
    from .batch import Certifier, GridSearcher
    from .search import SearchSettings

    search_options = {"--steps": args.steps, "--features": args.features, "--heuristic": args.heuristic,
                      "--family": args.family, "--rounds": args.rounds, "--levels": args.levels}
    if args.eps is not None or args.eps_sweep:
        given = [name for name, value in search_options.items() if value is not None]
        if given:
            raise SmtVerifyError(f"{given[0]} is a search option (with --span); certification (--eps) takes none",
                                 field=given[0])
        sizes = [args.eps] if args.eps is not None else number_list(args.eps_sweep, "--eps-sweep", positive=False)
        return Certifier(network, bounds), sizes, None
    sizes = [args.span] if args.span is not None else number_list(args.span_sweep, "--span-sweep", positive=True)
    family = args.family or "pixel"
    if family != "pixel" and args.features is not None:
        raise SmtVerifyError(f"the {family} family moves the whole input: it takes no --features", field="--family")
    settings = SearchSettings(family=family, span=min(sizes), steps=args.steps or 2,
                              features=args.features or min(4, network.n_inputs),
                              heuristic=args.heuristic or "activation", rounds=args.rounds or 1, domain=bounds,
                              levels=args.levels)
    settings.check(network)
    recorded = {"family": family, "steps": settings.steps, "features": settings.features,
                "heuristic": settings.heuristic, "rounds": settings.rounds, "levels": args.levels}
    return GridSearcher(network, settings), sizes, recorded


def _batch_images(args: argparse.Namespace, network) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels: a file's or a folder's, or the bundled model's test images; the
    first --limit."""
    from .inputs import read_image_folder, read_inputs
    from .resources import bundled_name, classes_interleaved, test_images

    if args.images and Path(args.images).is_dir():
        inputs, labels = read_image_folder(args.images, network)
    elif args.images:
        inputs, labels = read_inputs(args.images, network)
        if labels is None:
            raise SmtVerifyError("holds no labels (y): each image's true class is needed",
                                 file=args.images, field="--images")
    else:
        name = bundled_name(args.model)
        if name is None:
            raise SmtVerifyError("a model that is not bundled needs its images: --images FILE.npz or a folder",
                                 field="--images")
        images = classes_interleaved(test_images(name))      # so that --limit N covers every class
        inputs, labels = images.images, images.labels
    bad = np.flatnonzero((labels < 0) | (labels >= network.n_outputs))
    if bad.size:
        raise SmtVerifyError(f"label {labels[bad[0]]} of image {bad[0]} is not a class of a network with "
                             f"{network.n_outputs} outputs", file=args.images, field="--images")
    return inputs[:args.limit], labels[:args.limit]

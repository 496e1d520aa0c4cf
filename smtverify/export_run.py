"""A run folder's counterexamples exported for use elsewhere: npz to retrain on, PNGs to look at and
feed back to `batch --images`, the competition's counterexample text, and a JSON manifest.

An export is what a user trusts without the run's own files beside it, so nothing is copied on the
run's word: the model must still be the one the run used (its sha256 compared with run.json's), and
every example is run again by onnxruntime before it is written. One that is no longer classified
as its recorded adversarial class (a tampered file, a changed model) is reported and left out;
one that a format cannot hold exactly (a PNG off the 8-bit lattice) is counted and said why.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_whole
from .confirm import Counterexample, confirm, write_vnncomp_result
from .errors import SmtVerifyError
from .export import example_files
from .inputs import LABELS_FILE, read_input
from .network import Network
from .onnx_import import load_onnx
from .png import is_image, png_is_exact, save_png
from .reference import OnnxRuntimeExecutor
from .run_folder import EXAMPLES, EXPORT, JOURNAL, MANIFEST, SUMMARY, Journal, sha256_of_file, versions
from .verdict import UNSAFE_GUARANTEE

FORMATS = ("npz", "png", "vnncomp", "json")
DEFAULT_NAMES = {"npz": "counterexamples.npz", "png": "png", "vnncomp": "vnncomp", "json": "manifest.json"}
REGION_KEYS = ("input", "input_sha256", "inputs", "label", "images", "images_sha256", "instances", "instances_sha256",
               "mode", "sizes", "span", "span_used", "steps", "family", "features", "heuristic", "rounds", "levels",
               "domain", "layer", "grid_note")
BENCH_COUNTS = ("instances", "solved", "wrong", "sat", "unsat", "timeout", "unknown", "error")
_VALUE = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


@dataclass
class StoredExample:
    """One example file of a run, as stored (x exactly, in the network's layout) and as re-checked."""

    source: str                        # its npz, relative to the run folder
    x: np.ndarray                      # float32
    original: np.ndarray               # float32
    y_true: int
    y_adv: int
    changed_dims: np.ndarray
    manipulated_dims: np.ndarray       # c is aligned with these (the search's grid dimensions)
    c: np.ndarray
    logits: np.ndarray                 # float32, the run's (onnxruntime's) output on x
    size: float | None = None          # batch: the eps or span of its item
    image_index: int | None = None

    def distances(self) -> dict[str, float]:
        """Recomputed from x and the original, not taken from the file."""
        delta = (self.x.astype(np.float64) - self.original.astype(np.float64)).reshape(-1)
        return {"l0": int(np.count_nonzero(delta)), "l1": float(np.abs(delta).sum()),
                "l2": float(np.sqrt(delta @ delta)), "linf": float(np.abs(delta).max(initial=0.0))}


@dataclass
class Run:
    """A run folder opened for export: what it was, its model (None for a bench: one per instance)
    and its examples that passed the re-check; `found` counts them all, `refused` says why not."""

    path: Path
    command: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    network: Network | None
    model_sha256: str | None
    examples: list[Any]                # StoredExample, or (bench) BenchCounterexample
    refused: list[dict[str, str]]
    found: int


@dataclass
class BenchCounterexample:
    """A bench instance's counterexample file, re-confirmed against its network and property."""

    source: str
    file: Path
    x: np.ndarray
    onnx: str
    vnnlib: str


def read_vnncomp_counterexample(path: str | Path) -> tuple[str, np.ndarray, np.ndarray]:
    """The competition's result text: its verdict word and the X and Y values (float32, by index)."""
    text = Path(path).read_text()
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for name, index, value in _VALUE.findall(text):
        values[name][int(index)] = float(value)
    arrays = [np.asarray([v[i] for i in range(len(v))], np.float32) if sorted(v) == list(range(len(v))) else None
              for v in values.values()]
    if arrays[0] is None or arrays[1] is None:
        raise SmtVerifyError("its X_i or Y_j indices are not 0..n-1", file=path)
    return (text.split(maxsplit=1) or [""])[0], arrays[0], arrays[1]


def open_run(path: str | Path, model: str | Path | None = None) -> Run:
    """The run folder at `path` with its examples re-checked. `model` replaces the path run.json
    records (a moved model); its sha256 must still be the recorded one."""
    folder = Path(path)
    if not folder.is_dir():
        raise SmtVerifyError("no such run folder" if not folder.exists() else "is a file, not a run folder", file=folder)
    manifest = _json(folder / MANIFEST)
    summary = _json(folder / SUMMARY)
    command = manifest.get("command") or _command_of(folder)
    if command == "bench":
        examples, refused, found = _bench_counterexamples(folder)
        return Run(folder, command, manifest, summary, None, None, examples, refused, found)
    model_path = Path(model or manifest.get("model") or summary.get("model") or "")
    if model_path == Path(""):
        raise SmtVerifyError(f"names no model (no {MANIFEST}): give --model", file=folder, field="--model")
    if not model_path.is_file():
        raise SmtVerifyError("the run's model is not there (moved? give --model)", file=model_path, field="model")
    digest, recorded = sha256_of_file(model_path), manifest.get("model_sha256")
    if recorded and digest != recorded:
        raise SmtVerifyError(f"has changed since the run: sha256 {digest}, the run recorded {recorded} in "
                             f"{folder / MANIFEST}", file=model_path, field="model_sha256")
    network = load_onnx(str(model_path))
    files = sorted(f for f in (folder / EXAMPLES).glob("*.npz") if not f.name.endswith(".partial.npz")) \
        if command == "batch" else example_files(folder)
    stored, refused = [], []
    for file in files:
        try:
            stored.append(_read_example(file, folder, network.input_shape))
        except (ValueError, KeyError, OSError) as error:
            refused.append({"file": str(file.relative_to(folder)), "reason": f"unreadable: {error}"})
    domain = region_of(manifest, summary).get("domain")
    examples = _recheck(stored, network, refused, domain, command, manifest.get("mode"))
    return Run(folder, command, manifest, summary, network, digest, examples, refused, len(files))


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SmtVerifyError(f"cannot be read: {error}", file=path) from None
    return record if isinstance(record, dict) else {}


def _command_of(folder: Path) -> str:
    """A folder written before run.json existed (a search's), told by its files."""
    if (folder / EXAMPLES).is_dir():
        return "batch"
    if example_files(folder):
        return "search"
    if any(folder.glob("*.counterexample")):
        return "bench"
    raise SmtVerifyError(f"is not a run folder: no {MANIFEST}, no example_NNNN.npz, no examples/", file=folder)


def _read_example(file: Path, folder: Path, shape: tuple[int, ...]) -> StoredExample:
    with np.load(file, allow_pickle=False) as data:
        x, original = data["input"], data["original"]
        if x.dtype != np.float32 or x.shape != shape or original.shape != shape:
            raise ValueError(f"input {x.dtype} {list(x.shape)}, original {list(original.shape)}: the network "
                             f"takes float32 {list(shape)}")
        manipulated = data["manipulated_dims"] if "manipulated_dims" in data.files else np.zeros(0, np.int64)
        size = float(data["size"]) if "size" in data.files else None
        index = int(data["image_index"]) if "image_index" in data.files else None
        return StoredExample(str(file.relative_to(folder)), x, original.astype(np.float32), int(data["original_class"]),
                             int(data["new_class"]), data["changed_dims"].astype(np.int64).reshape(-1),
                             manipulated.astype(np.int64).reshape(-1), data["c"].astype(np.int64).reshape(-1),
                             data["logits"].astype(np.float32).reshape(-1), size, index)


def _recheck(stored: list[StoredExample], network: Network, refused: list[dict[str, str]], domain: list[float] | None,
             command: str, mode: str | None) -> list[StoredExample]:
    """Those onnxruntime still classifies as their recorded adversarial class, strictly above the
    correct one, inside the domain (and for a certified batch inside their eps ball)."""
    if not stored:
        return []
    logits = OnnxRuntimeExecutor(network).logits(np.stack([e.x for e in stored]))
    kept = []
    for example, y in zip(stored, logits):
        found = int(np.argmax(y))
        reason = None
        if found != example.y_adv or example.y_adv == example.y_true or not y[example.y_adv] > y[example.y_true]:
            reason = (f"onnxruntime classifies it as {found} (the run recorded {example.y_adv}, "
                      f"correct class {example.y_true}): not the recorded adversarial example")
        elif example.logits.shape != y.shape or not np.allclose(example.logits, y, rtol=1e-4, atol=1e-4):
            reason = "its stored logits are not onnxruntime's output on its input"
        elif domain is not None and (example.x.min() < domain[0] or example.x.max() > domain[1]):
            reason = f"it lies outside the domain {domain}"
        elif command == "batch" and mode == "certify" and example.size is not None \
                and example.distances()["linf"] > example.size:
            reason = f"it lies outside its L-inf ball of eps {example.size:g}"
        if reason:
            refused.append({"file": example.source, "reason": reason})
        else:
            kept.append(example)
    return kept


def _bench_counterexamples(folder: Path) -> tuple[list[BenchCounterexample], list[dict[str, str]], int]:
    """A bench folder's counterexamples, each confirmed again against the network and property its
    journal record names."""
    from .vnnlib import read_vnnlib

    records = [r for r in Journal(folder / JOURNAL).records("instance") if r.get("counterexample")]
    kept, refused = [], []
    for record in records:
        source = str(record["counterexample"])
        file = folder / source
        try:
            onnx, vnnlib = (_named_file(record.get(k), folder) for k in ("onnx", "vnnlib"))
            verdict, x, _ = read_vnncomp_counterexample(file)
            network = load_onnx(str(onnx))
            confirmed = verdict == "sat" and x.size == network.n_inputs and \
                confirm(network, read_vnnlib(vnnlib, network.n_inputs, network.n_outputs), x)
            ok = bool(confirmed) and np.array_equal(confirmed.input.reshape(-1), x)   # not moved into the box
        except (SmtVerifyError, OSError, ValueError) as error:
            refused.append({"file": source, "reason": f"cannot be re-checked: {error}"})
            continue
        if ok:
            kept.append(BenchCounterexample(source, file, x, str(onnx), str(vnnlib)))
        else:
            refused.append({"file": source, "reason": "onnxruntime does not confirm it inside its property's box"})
    return kept, refused, len(records)


def _named_file(name: Any, folder: Path) -> Path:
    if not name:
        raise ValueError("its journal record names no network or property")
    path = Path(str(name))
    return path if path.is_absolute() or path.exists() else folder / path


def region_of(manifest: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """What the run decided about, from its manifest (settings first) and its summary."""
    sources = [manifest, manifest.get("settings") or {}, manifest.get("search") or {}, summary]
    region: dict[str, Any] = {}
    for key in REGION_KEYS:
        value = next((s[key] for s in sources if isinstance(s, dict) and s.get(key) is not None), None)
        if value is not None:
            region[key] = value
    if isinstance(summary.get("grids"), list):
        region["grid_dims"] = [grid.get("dims") for grid in summary["grids"] if isinstance(grid, dict)]
    if "input" in region and "input_sha256" not in region and Path(str(region["input"])).is_file():
        region["input_sha256"] = sha256_of_file(region["input"])
    certify = region.get("mode") == "certify"
    sizes = region.pop("sizes", None)        # a batch's: the eps of its balls or the span of its grids
    if sizes is not None:
        region.setdefault("eps" if certify else "span", sizes)
    region["kind"] = "linf_ball" if certify else "vnnlib" if manifest.get("command") == "bench" else "dlv_grid"
    return region


def export_run(path: str | Path, fmt: str, to: str | Path | None = None, model: str | Path | None = None,
               force: bool = False) -> dict[str, Any]:
    """Write the run's re-checked examples in `fmt` to `to` (default RUN_DIR/export/...); returns
    what was written, left out (failed the re-check) and skipped (the format cannot hold it)."""
    if fmt not in FORMATS:
        raise SmtVerifyError(f"unknown format '{fmt}' (one of {', '.join(FORMATS)})", field="--format")
    destination = Path(to) if to else Path(path) / EXPORT / DEFAULT_NAMES[fmt]
    run = open_run(path, model)
    if run.command == "bench" and fmt in ("npz", "png"):
        raise SmtVerifyError("a bench folder holds no images or classes, only the competition's counterexamples: "
                             "export it as --format vnncomp or json", file=run.path, field="--format")
    if run.found and not run.examples:
        raise SmtVerifyError(f"none of its {run.found} examples passed the re-check (first: "
                             f"{run.refused[0]['file']}: {run.refused[0]['reason']})", file=run.path)
    _prepare(destination, fmt, force, default=to is None)
    writer = {"npz": _write_npz, "png": _write_png, "vnncomp": _write_vnncomp, "json": _write_manifest}[fmt]
    files, skipped = writer(run, destination)
    return {"run": str(run.path), "command": run.command, "format": fmt, "to": str(destination),
            "model": run.network and run.network.path, "model_sha256": run.model_sha256, "found": run.found, "exported": len(run.examples) - len(skipped), "files": files,
            "left_out": run.refused, "skipped": skipped}


def _prepare(destination: Path, fmt: str, force: bool, default: bool) -> None:
    """An existing export is replaced only with force (a folder: only the files an export writes)."""
    folder = fmt in ("png", "vnncomp")
    if default:
        destination.parent.mkdir(parents=True, exist_ok=True)
    elif not destination.resolve().parent.is_dir():
        raise SmtVerifyError(f"the folder {destination.parent} does not exist", file=destination, field="--to")
    if destination.exists() and folder != destination.is_dir():
        raise SmtVerifyError("is a folder" if destination.is_dir() else "is a file, not a folder",
                             file=destination, field="--to")
    used = destination.exists() and (not folder or any(destination.iterdir()))
    if used and not force:
        raise SmtVerifyError("exists already: --force replaces it, or choose another --to", file=destination,
                             field="--to")
    if used and folder:
        for stale in [*destination.glob("*.png"), *destination.glob("*.counterexample"), destination / LABELS_FILE]:
            stale.unlink(missing_ok=True)
    if folder:
        destination.mkdir(exist_ok=True)


def _padded(arrays: list[np.ndarray], fill: int) -> np.ndarray:
    """Ragged integer vectors as one (N, longest) int64 array, padded with `fill`."""
    width = max((len(a) for a in arrays), default=0)
    out = np.full((len(arrays), width), fill, np.int64)
    for row, values in zip(out, arrays):
        row[:len(values)] = values
    return out


def _write_npz(run: Run, destination: Path) -> tuple[list[str], list[dict[str, str]]]:
    """x, y_true (also as y), y_adv, originals, delta = x - originals, dims (changed, -1 padded),
    manipulated_dims and c (aligned; -1 / 0 padded), distances, logits, size, image_index (-1: none),
    source. The correct class is the label to retrain on."""
    examples = run.examples
    empty = np.zeros((0,) + tuple(run.network.input_shape if run.network else (0,)), np.float32)
    x = np.stack([e.x for e in examples]) if examples else empty       # a run without examples: N = 0
    originals = np.stack([e.original for e in examples]) if examples else empty
    distances = [e.distances() for e in examples]
    y_true = np.asarray([e.y_true for e in examples], np.int64)
    arrays = {"x": x, "y_true": y_true, "y": y_true,      # y: the label `eval` and `batch --images` read
              "y_adv": np.asarray([e.y_adv for e in examples], np.int64), "originals": originals,
              "delta": (x - originals).astype(np.float32), "dims": _padded([e.changed_dims for e in examples], -1),
              "manipulated_dims": _padded([e.manipulated_dims for e in examples], -1),
              "c": _padded([e.c for e in examples], 0), "logits": np.stack([e.logits for e in examples]) if examples else np.zeros((0, 0)),
              **{k: np.asarray([d[k] for d in distances], np.int64 if k == "l0" else np.float64)
                 for k in ("l0", "l1", "l2", "linf")},
              "size": np.asarray([np.nan if e.size is None else e.size for e in examples], np.float64),
              "image_index": np.asarray([-1 if e.image_index is None else e.image_index for e in examples], np.int64),
              "source": np.asarray([e.source for e in examples], dtype=str)}
    write_whole(destination, lambda partial: np.savez(partial, **arrays))
    return [str(destination)], []


def _write_png(run: Run, destination: Path) -> tuple[list[str], list[dict[str, str]]]:
    """One exact PNG per example that an 8-bit PNG holds (read back: the same float32 tensor, which
    is checked), and labels.csv of file, correct label (and the adversarial class)."""
    files, skipped, rows = [], [], []
    for example in run.examples:
        name = Path(example.source).stem + ".png"
        if not is_image(example.x.shape):
            skipped.append({"file": example.source, "reason": f"not an image (shape {list(example.x.shape)})"})
            continue
        if not png_is_exact(example.x):
            skipped.append({"file": example.source, "reason": "off the 8-bit lattice k/255: a PNG would change it "
                            "(the npz export holds it exactly)"})
            continue
        save_png(example.x, destination / name)
        if not np.array_equal(read_input(destination / name, run.network), example.x):
            (destination / name).unlink()
            skipped.append({"file": example.source, "reason": "its PNG does not read back as the same tensor"})
            continue
        files.append(str(destination / name))
        rows.append(f"{name},{example.y_true},{example.y_adv}")
    if skipped and not files:
        raise SmtVerifyError(f"none of its {len(run.examples)} examples can be written exactly as PNG "
                             f"(the first: {skipped[0]['reason']})", file=run.path, field="--format")
    (destination / LABELS_FILE).write_text("file,label,adversarial_class\n" + "\n".join(rows) + "\n")
    return files + [str(destination / LABELS_FILE)], skipped


def _write_vnncomp(run: Run, destination: Path) -> tuple[list[str], list[dict[str, str]]]:
    """`sat` and the inputs and outputs, per example; a bench's files are copied as they are."""
    files = []
    for example in run.examples:
        path = destination / (Path(example.source).stem + ".counterexample")
        if isinstance(example, BenchCounterexample):
            shutil.copyfile(example.file, path)
        else:
            write_vnncomp_result(path, "sat", Counterexample(example.x, example.logits, example.logits,
                                                             label=example.y_true, new_class=example.y_adv))
        files.append(str(path))
    return files, []


def _write_manifest(run: Run, destination: Path) -> tuple[list[str], list[dict[str, str]]]:
    """What the examples are counterexamples of, and each one, for a reader without the run folder."""
    summary = run.summary
    record = {
        "run": str(run.path), "command": run.command, "created": run.manifest.get("created"),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": run.network and run.network.path, "model_sha256": run.model_sha256,
        "model_sha256_recorded": bool(run.manifest.get("model_sha256")),
        "region": region_of(run.manifest, summary),
        "verdict": summary.get("verdict"), "guarantee": summary.get("guarantee") or UNSAFE_GUARANTEE,
        "results": summary.get("per_eps") or {k: summary[k] for k in BENCH_COUNTS if k in summary} or None,
        "complete": summary.get("complete"),
        "versions": {"run": run.manifest.get("versions"), "export": versions()},
        "counts": {"found": run.found, "exported": len(run.examples), "left_out": len(run.refused)},
        "left_out": run.refused, "examples": [_example_record(e) for e in run.examples]}
    destination.write_text(json.dumps(record, indent=1))
    return [str(destination)], []


def _example_record(example: Any) -> dict[str, Any]:
    if isinstance(example, BenchCounterexample):
        return {"file": example.source, "onnx": example.onnx, "vnnlib": example.vnnlib,
                "onnx_sha256": sha256_of_file(example.onnx)}
    record = {"file": example.source, "y_true": example.y_true, "y_adv": example.y_adv, **example.distances(),
              "png_exact": bool(is_image(example.x.shape) and png_is_exact(example.x))}
    if example.size is not None:
        record.update(size=example.size, image_index=example.image_index)
    return record

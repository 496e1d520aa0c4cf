"""Reading inputs for a network from files: one input (an .npy array or an image such as .png), or
a batch (an .npz of inputs and labels, the tool's own example and retrain files among them, or
an .npy with a batch axis)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputFileError, InputShapeError
from .network import Network

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff"}


def read_array(path: str | Path) -> np.ndarray:
    """The raw array in a file: .npy as stored; images as (channels, height, width) in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError("is a folder, not a file" if path.is_dir() else "no such file", file=path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise InputFileError(f"not a readable .npy array: {error}", file=path) from None
    if suffix in IMAGE_SUFFIXES:
        return _read_image(path)
    raise InputFileError(f"unknown input format '{suffix}' (use .npy or an image such as .png)", file=path)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError   # only image inputs need Pillow loaded

    try:
        with Image.open(path) as image:
            mode = "L" if image.mode in ("1", "L", "LA", "I", "I;16", "P") and _is_gray(image) else "RGB"
            pixels = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise InputFileError(f"not a readable image: {error}", file=path) from None
    return pixels[None] if pixels.ndim == 2 else np.transpose(pixels, (2, 0, 1))


def _is_gray(image) -> bool:
    if image.mode != "P":
        return True
    palette = np.asarray(image.convert("RGB"))
    return bool(np.all(palette[..., 0] == palette[..., 1]) and np.all(palette[..., 1] == palette[..., 2]))


def read_input(path: str | Path, network: Network) -> np.ndarray:
    """One input in the network's layout (no batch axis), as float32.

    An .npy must hold exactly the network's input shape, optionally with a leading batch axis of 1.
    An image is accepted when it has as many values as the input (so a 28x28 PNG feeds a network
    that takes 784 values): pixels are read in C order, channels first.
    """
    array = read_array(path)
    if array.shape == network.input_shape:
        return _finite(array, path)
    if array.shape == (1,) + network.input_shape:
        return _finite(array[0], path)
    if Path(path).suffix.lower() in IMAGE_SUFFIXES and array.size == network.n_inputs:
        return _finite(array.reshape(network.input_shape), path)
    raise InputShapeError(f"holds shape {list(array.shape)}; the network "
                          f"'{Path(network.path).name}' expects {list(network.input_shape)}", file=path)


def _finite(array: np.ndarray, path: str | Path) -> np.ndarray:
    """As float32, or an error for values no input can have: NaN, infinity, a non-numeric dtype,
    or a number too large for float32 (which would become infinity silently)."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
        raise InputFileError(f"holds {array.dtype} values, not real numbers", file=path)
    with np.errstate(over="ignore"):
        values = array.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values.reshape(-1)))
    if bad.size:
        raise InputFileError(f"holds {bad.size} value(s) that are NaN or infinite in float32, the first at flat "
                             f"index {bad[0]} ({array.reshape(-1)[bad[0]]})", file=path)
    return values


# An .npz's inputs and labels under the names numpy users, the competition's tools and smtverify's
# own files give them (example_NNNN.npz: input, original_class; retrain.npz: inputs, labels).
NPZ_INPUT_KEYS = ("x", "inputs", "input", "images")
NPZ_LABEL_KEYS = ("y", "labels", "label", "original_class")


def read_inputs(path: str | Path, network: Network) -> tuple[np.ndarray, np.ndarray | None]:
    """Every input in a file, (N, *input shape) as float32, with their labels where the file has
    them: an .npz (inputs under one of NPZ_INPUT_KEYS, labels under one of NPZ_LABEL_KEYS), an
    .npy with or without a batch axis, or one image."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        array = read_array(path)
        if array.ndim == len(network.input_shape) + 1 and array.shape[1:] == network.input_shape:
            return _finite(array, path), None
        return read_input(path, network)[None], None
    inputs, labels = _read_npz(path)
    shape = network.input_shape
    if inputs.shape == shape:
        inputs = inputs[None]
    if inputs.ndim != len(shape) + 1 or inputs.shape[1:] != shape:
        raise InputShapeError(f"holds inputs of shape {list(inputs.shape)}; the network '{Path(network.path).name}' "
                              f"expects {list(shape)}, with or without a batch axis", file=path)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(inputs) or not np.issubdtype(labels.dtype, np.integer):
            raise InputFileError(f"holds {len(labels)} labels of type {labels.dtype} for {len(inputs)} inputs; "
                                 "labels must be one integer class per input", file=path)
    return _finite(inputs, path), labels


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The inputs and (if any) labels of an .npz, by the first of the known names it uses."""
    if not path.is_file():
        raise InputFileError("is a folder, not a file" if path.is_dir() else "no such file", file=path)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            key = next((k for k in NPZ_INPUT_KEYS if k in names), None)
            if key is None:
                raise InputFileError(f"holds no inputs: it has {sorted(names)}, none of {list(NPZ_INPUT_KEYS)}",
                                     file=path)
            label_key = next((k for k in NPZ_LABEL_KEYS if k in names), None)
            return data[key], (data[label_key] if label_key else None)
    except (ValueError, OSError) as error:
        raise InputFileError(f"not a readable .npz archive: {error}", file=path) from None


LABELS_FILE = "labels.csv"


def read_image_folder(folder: str | Path, network: Network) -> tuple[np.ndarray, np.ndarray]:
    """The images of a folder and their labels, which the folder gives in one of three ways:
    a labels.csv of `file,label` rows; one subfolder per class named by its number (3/img.png);
    or file names that start with the label and an underscore or dash (3_0001.png). Images are
    taken in sorted order, each read as `read_input` reads one."""
    folder = Path(folder)
    if (folder / LABELS_FILE).is_file():
        listed = _listed_images(folder / LABELS_FILE)
    else:
        listed = [(p, _label_of(p, folder)) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not listed:
        raise InputFileError(f"holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", file=folder)
    inputs = np.stack([read_input(path, network) for path, _ in listed])
    return inputs, np.asarray([label for _, label in listed], np.int64)


def _listed_images(path: Path) -> list[tuple[Path, int]]:
    import csv

    rows = []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or row[0].strip() in ("", "file") or row[0].startswith("#"):
                continue
            if len(row) < 2 or not row[1].strip().isdigit():
                raise InputFileError(f"a row must be file,label with a whole-number label, not {','.join(row)}",
                                     file=path, line=number)
            image = path.parent / row[0].strip()
            if not image.is_file():
                raise InputFileError(f"lists {row[0].strip()}, which does not exist", file=path, line=number)
            rows.append((image, int(row[1])))
    return rows


def _label_of(image: Path, folder: Path) -> int:
    """The label a class subfolder or the name's leading number gives."""
    parent = image.parent.name
    if image.parent != folder and parent.isdigit():
        return int(parent)
    head = image.stem.replace("-", "_").split("_")[0]
    if head.isdigit():
        return int(head)
    raise InputFileError("has no label: name images LABEL_xxx.png, put them in a folder per class (3/xxx.png), "
                         f"or list them in {LABELS_FILE} (file,label)", file=image)

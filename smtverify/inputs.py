"""Reading one input for a network from a file: an .npy array or an image (.png etc.)."""
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
        raise InputFileError("no such file", file=path)
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

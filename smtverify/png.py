"""8-bit PNGs of image inputs, and whether one holds its input exactly.

A PNG read back as an input gives 8-bit values / 255 in float32 (inputs.read_array), so it holds an
input exactly only when the input lies on that lattice; otherwise it is a picture of the input only,
and its name says so (png_name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .manipulations import Domain


def is_image(shape: tuple[int, ...]) -> bool:
    """(H, W), or (C, H, W) with 1 or 3 channels, large enough to look at."""
    spatial = shape[-2:] if len(shape) in (2, 3) else ()
    return len(spatial) == 2 and min(spatial) >= 4 and (len(shape) == 2 or shape[0] in (1, 3))


def to_pixels(x: np.ndarray, domain: Domain = (0.0, 1.0)) -> np.ndarray:
    """An image input as 8-bit values in its own layout, the domain mapped onto 0..255."""
    lo, hi = domain
    return np.round(np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def png_is_exact(x: np.ndarray, domain: Domain = (0.0, 1.0)) -> bool:
    """Whether its PNG, read back as an input (8-bit values / 255 in float32), is exactly x."""
    x = np.asarray(x)
    return x.dtype == np.float32 and np.array_equal(to_pixels(x, domain).astype(np.float32) / np.float32(255), x)


def save_png(x: np.ndarray, path: Path, domain: Domain = (0.0, 1.0)) -> None:
    """An image input as an 8-bit PNG, the domain mapped onto 0..255."""
    from PIL import Image

    pixels = to_pixels(x, domain)
    pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim == 2 or pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    Image.fromarray(pixels).save(path)


def png_name(stem: str, exact: bool) -> str:
    """stem.png for a PNG that is the input exactly, stem.picture.png for one that only shows it."""
    return f"{stem}.png" if exact else f"{stem}.picture.png"

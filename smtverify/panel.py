"""A picture of one adversarial example for people: original, adversarial and their difference side
by side, enlarged, labelled with classes, confidence and distances (example_NNNN.panel.png).

A panel is for looking at, never for reading back as an input: the npz (or an exact PNG) is the
example. Images are enlarged with nearest neighbour so each pixel of an 8x8 or 28x28 input stays a
sharp square; the difference is a heat map (red: brighter, blue: darker, white: unchanged) scaled to
its largest change, which the label states.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .grid import Example
from .manipulations import Domain
from .png import to_pixels

TILE = 224                 # each image is enlarged to about this many pixels on its longer side
MARGIN, LINE = 8, 18       # around tiles; one line of text
TEXT_LINES_ABOVE, TEXT_LINES_BELOW = 1, 2


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return e / e.sum()


def _rgb(x: np.ndarray, domain: Domain) -> np.ndarray:
    """An image input (H, W), (1, H, W) or (3, H, W) as 8-bit RGB (H, W, 3), the domain onto 0..255."""
    pixels = to_pixels(x, domain)
    pixels = pixels.reshape((1,) + pixels.shape[-2:]) if pixels.ndim == 2 else pixels
    return np.moveaxis(np.broadcast_to(pixels, (3,) + pixels.shape[1:]), 0, -1)


def _heat_map(difference: np.ndarray) -> tuple[np.ndarray, float]:
    """The change summed over channels as RGB: white where unchanged, red up, blue down, full colour
    at the largest change (returned)."""
    d = np.asarray(difference, np.float64)
    d = d if d.ndim == 2 else d.sum(axis=0)
    largest = float(np.abs(d).max())
    t = np.abs(d) / largest if largest > 0 else np.zeros_like(d)
    fade = np.round(255 * (1 - t)).astype(np.uint8)
    full = np.full_like(fade, 255)
    up, down = np.stack([full, fade, fade], -1), np.stack([fade, fade, full], -1)
    return np.where((d >= 0)[..., None], up, down), largest


def _font(size: int = 14):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:          # Pillow before 10.1: the fixed bitmap font
        return ImageFont.load_default()


def panel_image(original: np.ndarray, example: Example, domain: Domain = (0.0, 1.0),
                original_logits: np.ndarray | None = None):
    """The panel as a PIL image (RGB). `original_logits`, when given, adds the original's confidence."""
    from PIL import Image, ImageDraw

    heat, largest = _heat_map(example.input.astype(np.float64) - np.asarray(original, np.float64))
    tiles = [_rgb(original, domain), _rgb(example.input, domain), heat]
    height, width = tiles[0].shape[:2]
    scale = max(1, TILE // max(height, width))
    tile_w, tile_h = width * scale, height * scale
    panel = Image.new("RGB", (3 * tile_w + 4 * MARGIN, tile_h + 2 * MARGIN + (TEXT_LINES_ABOVE + TEXT_LINES_BELOW)
                              * LINE), "white")
    draw, font = ImageDraw.Draw(panel), _font()
    top = MARGIN + TEXT_LINES_ABOVE * LINE
    texts = _labels(example, largest, original_logits)
    for i, (tile, (title, below)) in enumerate(zip(tiles, texts)):
        left = MARGIN + i * (tile_w + MARGIN)
        panel.paste(Image.fromarray(np.ascontiguousarray(tile)).resize((tile_w, tile_h), Image.NEAREST), (left, top))
        draw.rectangle((left - 1, top - 1, left + tile_w, top + tile_h), outline="gray")   # frames the white heat map
        draw.text((left, MARGIN), title, fill="black", font=font)
        for j, line in enumerate(below):
            draw.text((left, top + tile_h + 2 + j * LINE), line, fill="black", font=font)
    return panel


def _labels(example: Example, largest: float, original_logits: np.ndarray | None) -> list[tuple[str, list[str]]]:
    """(title, lines below) per tile: classes with confidence, then the distances."""
    adversarial = softmax(example.logits)
    was, now = example.original_class, example.new_class
    original_line = f"class {was}" + ("" if original_logits is None else f" ({softmax(original_logits)[was]:.1%})")
    return [("original", [original_line]),
            ("adversarial", [f"class {now} ({adversarial[now]:.1%})", f"class {was} now {adversarial[was]:.1%}"]),
            (f"difference (max {largest:.3g})", [f"L0 {example.l0}  L1 {example.l1:.3g}",
                                                 f"L2 {example.l2:.3g}  Linf {example.linf:.3g}"])]


def save_panel(path: str | Path, original: np.ndarray, example: Example, domain: Domain = (0.0, 1.0),
               original_logits: np.ndarray | None = None) -> Path:
    """Write the panel of one example as a PNG; returns its path."""
    panel_image(original, example, domain, original_logits).save(path)
    return Path(path)

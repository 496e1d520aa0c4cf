"""The bundled example models and test images (package data: no download, ever)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

MODELS = {
    "digits_mlp": ("digits_mlp.onnx", "digits_test.npz"),
    "digits_cnn": ("digits_cnn.onnx", "digits_test.npz"),
    "mnist_cnn": ("mnist_cnn.onnx", "mnist_test.npz"),
}
DEFAULT_MODEL = "mnist_cnn"


@dataclass(frozen=True)
class ImageSet:
    """Test images scaled to [0, 1] in NCHW layout, with their true labels."""

    name: str
    images: np.ndarray      # float32 (n, 1, h, w)
    labels: np.ndarray      # int64 (n,)


def _data_dir() -> Path:
    return Path(str(resources.files("smtverify") / "data"))


def model_path(name: str = DEFAULT_MODEL) -> Path:
    if name not in MODELS:
        raise KeyError(f"no bundled model '{name}'; bundled: {', '.join(MODELS)}")
    return _data_dir() / "models" / MODELS[name][0]


def test_images(model: str = DEFAULT_MODEL) -> ImageSet:
    """The held-out test images that go with a bundled model."""
    filename = MODELS[model][1]
    with np.load(_data_dir() / "images" / filename) as data:
        images = data["images"].astype(np.float32) / np.float32(data["scale"])
        return ImageSet(filename.removesuffix(".npz"), images[:, None], data["labels"].astype(np.int64))

"""The bundled example models, their test images and MNIST training images (package data: no download,
ever)."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import InputFileError


@dataclass(frozen=True)
class BundledModel:
    """A model shipped with the package, the test images that go with it, and what it is."""

    onnx_file: str
    images_file: str
    about: str


MODELS = {
    "digits_mlp": BundledModel("digits_mlp.onnx", "digits_test.npz",
                               "MLP 64-16-16-10 on scikit-learn's 8x8 digits"),
    "digits_cnn": BundledModel("digits_cnn.onnx", "digits_test.npz",
                               "CNN (Conv 4x3x3, MaxPool, Gemm) on scikit-learn's 8x8 digits"),
    "mnist_cnn": BundledModel("mnist_cnn.onnx", "mnist_test.npz",
                              "CNN (Conv 4, Conv 8, MaxPool, Gemm 32, Gemm 10) on MNIST 28x28, DLV's shape scaled down"),
}
DEFAULT_MODEL = "mnist_cnn"


@dataclass(frozen=True)
class ImageSet:
    """Images scaled to [0, 1] in NCHW layout, with their true labels."""

    name: str
    images: np.ndarray      # float32 (n, 1, h, w)
    labels: np.ndarray      # int64 (n,)


def _data_dir() -> Path:
    return Path(str(resources.files("smtverify") / "data"))


def model_path(name: str = DEFAULT_MODEL) -> Path:
    if name not in MODELS:
        raise KeyError(f"no bundled model '{name}'; bundled: {', '.join(MODELS)}")
    return _data_dir() / "models" / MODELS[name].onnx_file


def resolve_model(name_or_path: str) -> Path:
    """A model argument as the command line takes it: a file that exists wins, so a user's own file
    named like a bundled model is never shadowed; otherwise a bundled model's name."""
    if Path(name_or_path).exists():
        return Path(name_or_path)
    if name_or_path in MODELS:
        return model_path(name_or_path)
    raise InputFileError(f"neither a file nor a bundled model ({', '.join(MODELS)}; `smtverify models` "
                         "lists them)", file=name_or_path)


def bundled_name(path: str | Path) -> str | None:
    """The bundled model a path is, if any (its test images then go with it)."""
    return next((name for name in MODELS if Path(path) == model_path(name)), None)


# The training images bundled for a model (for fine-tuning, e.g. examples/retrain.py); the digits
# models' training set is scikit-learn's, not bundled.
TRAINING_FILES = {"mnist_cnn": "mnist_train.npz"}


def _read_images(filename: str) -> ImageSet:
    with np.load(_data_dir() / "images" / filename) as data:
        images = data["images"].astype(np.float32) / np.float32(data["scale"])
        return ImageSet(filename.removesuffix(".npz"), images[:, None], data["labels"].astype(np.int64))


def test_images(model: str = DEFAULT_MODEL) -> ImageSet:
    """The held-out test images that go with a bundled model."""
    return _read_images(MODELS[model].images_file)


def training_images(model: str = DEFAULT_MODEL) -> ImageSet:
    """The images a bundled model was trained on (disjoint from its test images), where bundled:
    so a model can be fine-tuned on its own data with no download."""
    if model not in TRAINING_FILES:
        raise KeyError(f"no bundled training images for '{model}'; bundled for: {', '.join(TRAINING_FILES)}")
    return _read_images(TRAINING_FILES[model])


def classes_interleaved(images: ImageSet) -> ImageSet:
    """The same images, taken one per class in turn (the first of each class, then the second, ...):
    the bundled MNIST files are sorted by class, so the first N would otherwise be one class."""
    rank = np.zeros(len(images.labels), np.int64)
    for label in np.unique(images.labels):
        members = np.flatnonzero(images.labels == label)
        rank[members] = np.arange(len(members))
    order = np.lexsort((images.labels, rank))
    return ImageSet(images.name, images.images[order], images.labels[order])

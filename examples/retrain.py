"""Retraining on the counterexamples: does fine-tuning on DLV's adversarial examples make the model harder
to fool and easier to verify?

1. DLV's search over N bundled MNIST training images of the bundled model finds adversarial
   examples (each confirmed by onnxruntime); they are saved, labelled with their correct class, to
   OUT/retrain.npz (the layout of a search's own retrain.npz: inputs, labels).
2. The dense head (fc1, relu, fc2) is fine-tuned in numpy on the original training images plus the
   examples read back from that file. The conv layers stay frozen, so the head is trained on their
   exact features (read at the `flatten` node by onnxruntime). Weights stay on the 2^-8 grid, as every bundled model's are, because
   short dyadic weights are what keeps the SMT encodings fast: training sees the rounded weights
   (straight-through), the file holds them. OUT/MODEL_retrained.onnx is the original file with only the
   head's initializers replaced.
3. On M held-out images (the bundled test images, never searched for training) the old and the
   new model get the same searches and the same batch certification (the `smtverify batch` command) at
   one eps. The search picks its pixels by each model's own saliency, so two rows compare them: every
   point of the grids the original model's search went through, replayed on both models by onnxruntime
   (the same grids), and each model's own search with the same settings (what an attacker would run).
   The table: clean accuracy, images with an adversarial example (of those classified correctly), mean
   L0 of the smallest example per image, verified accuracy. OUT/retrain.json holds the numbers.
   --control adds a column: the same fine-tuning on the training images alone, to tell the effect of
   the examples from that of more training.

Both image files are sorted by class, so the N and M images are taken class by class in turn (the
first of each class, then the second, ...): the first N alone would all be zeros.

Run: python examples/retrain.py [--train-images N] [--test-images M] [--eps E] [--out DIR]
(about two minutes with the defaults on two cores; with --control --test-images 100, about nine).
Fixed seeds: the examples, the new model and the search rows are the same every run; certification
has a per-item time limit, so on a much slower or busier machine an item can come out unknown instead
of verified. Numpy only: torch is never needed.
"""

import argparse
import itertools
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import numpy_helper

from smtverify import load_onnx, resources
from smtverify.manipulations import Manipulation
from smtverify.search import SearchSettings, dlv_search

GRID = 256                                # the bundled models' weights are multiples of 1/GRID
HEAD = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
FEATURES_NODE = "flatten"                 # the frozen part ends here


# ----- the searches ---------------------------------------------------------------------------
def search_settings(args: argparse.Namespace) -> SearchSettings:
    """One set of search knobs for training and evaluation alike, so "the same searches" is literal.
    Every example of a grid is collected (up to a cap per image): more examples to train on."""
    return SearchSettings(span=args.span, steps=args.steps, features=args.features, heuristic="gradient",
                          rounds=args.rounds, collect_all=True,
                          max_examples=args.examples_per_image, timeout=args.search_timeout)


def find_examples(model: Path, images: np.ndarray, labels: np.ndarray, settings: SearchSettings
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adversarial examples of every correctly classified image: (inputs, correct labels, their L0)."""
    network = load_onnx(model)
    found_inputs, found_labels, found_l0 = [], [], []
    predicted = network.logits(images).argmax(1)
    for x, label, guess in zip(images, labels, predicted):
        if guess != label:
            continue
        for example in dlv_search(network, x, int(label), settings).examples:
            found_inputs.append(example.example.input.reshape(x.shape))
            found_labels.append(int(label))
            found_l0.append(example.example.l0)
    shape = (-1, *images.shape[1:])
    return (np.asarray(found_inputs, np.float32).reshape(shape), np.asarray(found_labels, np.int64),
            np.asarray(found_l0, np.int64))


@dataclass
class SearchOutcome:
    """Per held-out image: whether the model classifies it correctly, and the smallest L0 of its
    adversarial examples (None: none found, or misclassified already: nothing to attack)."""

    correct: list[bool]
    smallest_l0: list[int | None]

    def attacked(self) -> int:
        return sum(l0 is not None for l0 in self.smallest_l0)

    def mean_l0(self) -> float | None:
        found = [l0 for l0 in self.smallest_l0 if l0 is not None]
        return float(np.mean(found)) if found else None


def held_out_search(model: Path, images: np.ndarray, labels: np.ndarray, settings: SearchSettings
                    ) -> tuple[SearchOutcome, list[list[Manipulation]]]:
    """The search on each correctly classified image, with the grids it searched (to replay them on
    another model: features are chosen by each model's own saliency, so only a replay compares two
    models on the same points)."""
    network = load_onnx(model)
    predicted = network.logits(images).argmax(1)
    correct, smallest, grids = [], [], []
    for x, label, guess in zip(images, labels, predicted):
        correct.append(bool(guess == label))
        if not correct[-1]:
            smallest.append(None)
            grids.append([])
            continue
        report = dlv_search(network, x, int(label), settings)
        smallest.append(min((f.example.l0 for f in report.examples), default=None))
        grids.append([g.manipulation for g in report.grids])
    return SearchOutcome(correct, smallest), grids


def replay(model: Path, images: np.ndarray, labels: np.ndarray, grids: list[list[Manipulation]],
           chunk: int = 4096) -> SearchOutcome:
    """Every point of the given grids, run by onnxruntime on `model`: the images with a misclassified
    point, and the smallest L0 (from the original image) of those points. An image the grids' model
    misclassified has no grids: for this model it counts as correct and not attacked."""
    session = runtime_session(onnx.load(str(model)))
    predicted = session.run(None, {"input": images})[0].argmax(1)
    correct, smallest = [], []
    for x, label, guess, image_grids in zip(images, labels, predicted, grids):
        correct.append(bool(guess == label))
        best = None
        for grid in image_grids if correct[-1] else []:
            points = np.array(list(itertools.product(*grid.levels)), dtype=np.int64)
            for start in range(0, len(points), chunk):
                inputs = grid.apply(points[start:start + chunk])
                wrong = session.run(None, {"input": inputs})[0].argmax(1) != label
                if wrong.any():
                    moved = (inputs[wrong].reshape(int(wrong.sum()), -1) != x.reshape(1, -1)).sum(1)
                    best = int(moved.min()) if best is None else min(best, int(moved.min()))
        smallest.append(best)
    return SearchOutcome(correct, smallest)


def runtime_session(proto: onnx.ModelProto) -> onnxruntime.InferenceSession:
    """onnxruntime, one thread: the executor the searches confirm their examples with."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ----- the frozen features and the head --------------------------------------------------------
def frozen_features(model: Path, images: np.ndarray) -> np.ndarray:
    """The `flatten` node's values, by onnxruntime: the head's input, fixed while the head trains."""
    proto = onnx.load(str(model))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES_NODE, onnx.TensorProto.FLOAT, None))
    return runtime_session(proto).run([FEATURES_NODE], {"input": images.astype(np.float32)})[0].astype(np.float64)


def read_head(model: Path) -> dict[str, np.ndarray]:
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(model)).graph.initializer}
    missing = [name for name in HEAD if name not in weights]
    if missing:
        raise SystemExit(f"{model}: no {', '.join(missing)}; this example fine-tunes the head fc1 -> relu -> fc2")
    return {name: weights[name].astype(np.float64) for name in HEAD}


def on_grid(w: np.ndarray) -> np.ndarray:
    return np.round(w * GRID) / GRID


def head_loss(head: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray,
              gradient: bool = False) -> tuple[float, dict[str, np.ndarray]]:
    """Mean cross-entropy of the head with its weights rounded to the grid, and (straight-through) its
    gradient with respect to the unrounded weights."""
    w1, b1, w2, b2 = (on_grid(head[name]) for name in HEAD)
    hidden_in = features @ w1.T + b1
    hidden = np.maximum(hidden_in, 0)
    logits = hidden @ w2.T + b2
    logits -= logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = float(-log_p[np.arange(len(labels)), labels].mean())
    if not gradient:
        return loss, {}
    d_logits = np.exp(log_p)
    d_logits[np.arange(len(labels)), labels] -= 1
    d_logits /= len(labels)
    d_hidden = (d_logits @ w2) * (hidden_in > 0)
    return loss, {"fc2.weight": d_logits.T @ hidden, "fc2.bias": d_logits.sum(0),
                  "fc1.weight": d_hidden.T @ features, "fc1.bias": d_hidden.sum(0)}


def fine_tune(head: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray, epochs: int,
              lr: float, seed: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Adam on minibatches in a seeded order, from the current weights; returns the new head on the grid."""
    head = {name: w.copy() for name, w in head.items()}
    moments = {name: (np.zeros_like(w), np.zeros_like(w)) for name, w in head.items()}
    rng, step = np.random.default_rng(seed), 0
    for _ in range(epochs):
        for index in np.array_split(rng.permutation(len(labels)), max(1, len(labels) // batch)):
            step += 1
            _, grads = head_loss(head, features[index], labels[index], gradient=True)
            for name, g in grads.items():
                m, v = moments[name]
                m[:] = 0.9 * m + 0.1 * g
                v[:] = 0.999 * v + 0.001 * g * g
                head[name] -= lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return {name: on_grid(w) for name, w in head.items()}


def write_model(original: Path, head: dict[str, np.ndarray], path: Path) -> None:
    """The original file with only the head's initializers replaced (float32, on the grid)."""
    proto = onnx.load(str(original))
    for tensor in proto.graph.initializer:
        if tensor.name in head:
            tensor.CopyFrom(numpy_helper.from_array(head[tensor.name].astype(np.float32), tensor.name))
    proto.producer_name = "smtverify examples/retrain.py"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


# ----- certification, through the command line --------------------------------------------------
def certify(model: Path, images: np.ndarray, labels: np.ndarray, eps: float, item_timeout: float,
            out: Path) -> dict:
    """`smtverify batch` at one eps, exactly as a user runs it; its --json summary."""
    data = out / "held_out.npz"
    np.savez(data, x=images, y=labels)
    command = [sys.executable, "-m", "smtverify.cli", "batch", str(model), "--images", str(data), "--eps",
               str(eps), "--item-timeout", str(item_timeout), "--out", str(out / f"batch_{model.stem}"),
               "--force", "--json", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"smtverify batch failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout)


# ----- the run ----------------------------------------------------------------------------------
def balanced(labels: np.ndarray) -> np.ndarray:
    """Indices taking the classes in turn: the first image of each class, then the second, ... So any
    prefix is (nearly) class-balanced, which the files, sorted by class, are not."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    return np.lexsort((labels, rank))


def format_table(rows: dict[str, dict], n_test: int, eps: float) -> str:
    """The table, a column per model (Markdown, so the README shows it as printed)."""
    def percent(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    def l0(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    columns = list(rows.values())
    lines = [
        ("", *rows),
        (f"clean accuracy, all {n_test} test images", *(percent(r["clean_accuracy_all_test"]) for r in columns)),
        ("clean accuracy, held-out images", *(percent(r["clean_accuracy"]) for r in columns)),
        ("adversarial example on the original's search grids",
         *(f"{r['adversarial_same_grids']}/{r['correct']}" for r in columns)),
        ("  mean L0 (smallest per image)", *(l0(r["mean_l0_same_grids"]) for r in columns)),
        ("adversarial example, the model's own search",
         *(f"{r['adversarial_own_search']}/{r['correct']}" for r in columns)),
        ("  mean L0 (smallest per image)", *(l0(r["mean_l0_own_search"]) for r in columns)),
        (f"verified accuracy at eps {eps}", *(percent(r["verified_accuracy"]) for r in columns)),
        ("  verified / falsified / unknown", *(f"{r['verified']}/{r['falsified']}/{r['unknown']}" for r in columns)),
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["| " + " | ".join([line[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(line[1:], widths[1:])])
            + " |" for line in lines]
    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return "\n".join([text[0], rule] + text[1:])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mnist_cnn", help="a bundled model with bundled training images")
    parser.add_argument("--train-images", type=int, default=300, help="training images searched (N)")
    parser.add_argument("--test-images", type=int, default=30, help="held-out test images compared (M)")
    parser.add_argument("--span", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--features", type=int, default=6, help="pixels per grid (a round)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--examples-per-image", type=int, default=8)
    parser.add_argument("--search-timeout", type=float, default=10.0, help="seconds per image searched")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--example-weight", type=int, default=1,
                        help="each example is repeated this often among the training images")
    parser.add_argument("--eps", type=float, default=0.04, help="L-infinity radius certified")
    parser.add_argument("--item-timeout", type=float, default=3.0, help="seconds per certification")
    parser.add_argument("--control", action="store_true",
                        help="also fine-tune on the training images alone (same recipe) and add its column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("smtverify-retrain"))
    args = parser.parse_args(argv)
    if args.model not in resources.TRAINING_FILES:
        parser.error(f"no bundled training images for {args.model}; use one of {', '.join(resources.TRAINING_FILES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    old = resources.model_path(args.model)
    train, test = resources.training_images(args.model), resources.test_images(args.model)

    # 1. examples on the training images
    settings = search_settings(args)
    searched = balanced(train.labels)[:args.train_images]
    inputs, labels, l0 = find_examples(old, train.images[searched], train.labels[searched], settings)
    np.savez(args.out / "retrain.npz", inputs=inputs, labels=labels, l0=l0)
    with np.load(args.out / "retrain.npz") as exported:
        inputs, labels = exported["inputs"], exported["labels"]
    print(f"1. search over {args.train_images} training images: {len(labels)} adversarial examples "
          f"(mean L0 {l0.mean() if len(l0) else 0:.1f}) -> {args.out / 'retrain.npz'} "
          f"({time.monotonic() - started:.0f} s)", flush=True)

    # 2. fine-tune the head on the training images plus the examples
    clean_features, example_features = frozen_features(old, train.images), frozen_features(old, inputs)
    features = np.concatenate([clean_features] + [example_features] * args.example_weight)
    targets = np.concatenate([train.labels] + [labels] * args.example_weight)
    head = read_head(old)
    new_head = fine_tune(head, features, targets, args.epochs, args.lr, args.seed)
    new = args.out / f"{args.model}_retrained.onnx"
    write_model(old, new_head, new)
    models = {"before": old}
    if args.control:      # the same fine-tuning without the examples: is it the examples that help?
        control = args.out / f"{args.model}_clean_finetuned.onnx"
        write_model(old, fine_tune(head, clean_features, train.labels, args.epochs, args.lr, args.seed), control)
        models["clean only"] = control
    models["after"] = new
    losses = {"examples": [head_loss(head, example_features, labels)[0],
                           head_loss(new_head, example_features, labels)[0]],
              "training_images": [head_loss(head, clean_features, train.labels)[0],
                                  head_loss(new_head, clean_features, train.labels)[0]]}
    print(f"2. fine-tuned {'/'.join(HEAD)} for {args.epochs} epochs on {len(train.labels)} training images + "
          f"{len(labels)} examples x{args.example_weight}: loss on the examples {losses['examples'][0]:.3f} -> "
          f"{losses['examples'][1]:.3f} -> {new} ({time.monotonic() - started:.0f} s)", flush=True)

    # 3. the same searches and certification on held-out images, old and new
    held_out = balanced(test.labels)[:args.test_images]
    x, y = test.images[held_out], test.labels[held_out]
    own_before, grids = held_out_search(old, x, y, settings)
    rows = {}
    for name, model in models.items():
        own = own_before if model == old else held_out_search(model, x, y, settings)[0]
        same = replay(model, x, y, grids)
        batch = certify(model, x, y, args.eps, args.item_timeout, args.out)
        per_eps = batch["per_eps"][0]
        rows[name] = {
            "clean_accuracy_all_test": float(np.mean(load_onnx(model).logits(test.images).argmax(1) == test.labels)),
            "clean_accuracy": batch["clean_accuracy"], "correct": sum(same.correct),
            "adversarial_same_grids": same.attacked(), "mean_l0_same_grids": same.mean_l0(),
            "adversarial_own_search": own.attacked(), "mean_l0_own_search": own.mean_l0(),
            "verified_accuracy": per_eps["verified_accuracy"],
            **{key: per_eps[key] for key in ("verified", "falsified", "unknown", "misclassified")},
        }
        print(f"3. {name}: searched and certified {len(y)} held-out images ({time.monotonic() - started:.0f} s)",
              flush=True)
    if rows["before"]["adversarial_same_grids"] != own_before.attacked():   # a search cut short by its timeout
        print("note: replaying the original model's grids found examples its search (timed out) did not")

    seconds = time.monotonic() - started
    print(f"\n{len(y)} held-out test images, eps {args.eps}, search: span {args.span}, {args.steps} step(s), "
          f"{args.rounds} rounds of {args.features} pixels")
    print(format_table(rows, len(test.labels), args.eps))
    record = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "search": asdict(settings) | {"domain": list(settings.domain)},
              "training_examples": int(len(labels)), "losses": losses, "models": {k: str(v) for k, v in models.items()},
              **rows, "seconds": round(seconds, 1)}
    (args.out / "retrain.json").write_text(json.dumps(record, indent=1, default=str))
    written = ", ".join(path.name for path in models.values() if path != old)
    print(f"\n{seconds:.0f} s; files in {args.out}/: retrain.npz, {written}, retrain.json, batch_*/")
    return record


if __name__ == "__main__":
    main()

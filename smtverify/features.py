"""Feature selection: which dimensions DLV manipulates, by a stated, deterministic heuristic (METHOD 6).

Both heuristics rank every dimension of a layer, best first, ties by index, so the same input and
network always give the same features and each DLV round simply takes the next ones in the ranking.
- activation (DLV's): the largest deviation |alpha(p) - mean(alpha)| of the activation from the
  layer's mean; at the input layer this ranks input dimensions (for images, pixels far from the
  average grey, the strokes of a digit).
- gradient (saliency): the largest |d margin / dx_p|, the margin being the label's logit minus the
  runner-up's, through the network's exact chain of steps (numpy, no autodiff library).
"""
from __future__ import annotations

import numpy as np

from .errors import SmtVerifyError
from .attack import gradient
from .network import Network
from .chain import chain_of

HEURISTICS = ("activation", "gradient")


def _best_first(score: np.ndarray) -> np.ndarray:
    """Indices by decreasing score, ties by increasing index."""
    return np.lexsort((np.arange(len(score)), -score))


def layer_activation(network: Network, x: np.ndarray, layer: str | None = None) -> np.ndarray:
    """The flat activation (float64) of one input at `layer` (an ONNX node output; None: the input)."""
    if layer is None or layer == network.input_name:
        return np.asarray(x, dtype=np.float64).reshape(-1)
    if layer not in network.layers:
        raise SmtVerifyError(f"no layer '{layer}' in the network; layers: {', '.join(network.layers)}",
                             file=network.path, field="layer")
    return network.run(x, np.float64)[layer].reshape(-1)


def activation_ranking(network: Network, x: np.ndarray, layer: str | None = None) -> np.ndarray:
    """DLV's heuristic: the layer's dimensions by decreasing |activation - layer mean|."""
    alpha = layer_activation(network, x, layer)
    return _best_first(np.abs(alpha - alpha.mean()))


def gradient_ranking(network: Network, x: np.ndarray, label: int) -> np.ndarray:
    """Input dimensions by decreasing |gradient| of the label's margin over the runner-up at x."""
    chain = chain_of(network)
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    logits = chain.forward(flat[None])[0]
    runner_up = int(np.argmax(np.where(np.arange(len(logits)) == label, -np.inf, logits)))
    direction = np.zeros(len(logits))
    direction[label], direction[runner_up] = 1.0, -1.0
    return _best_first(np.abs(gradient(chain, flat, direction)[0]))


def rank_features(network: Network, x: np.ndarray, heuristic: str, label: int,
                  layer: str | None = None) -> np.ndarray:
    """Every dimension of `layer` (default: the input), best first, by the named heuristic."""
    if heuristic == "activation":
        return activation_ranking(network, x, layer)
    if heuristic == "gradient":
        if layer is not None and layer != network.input_name:
            raise SmtVerifyError("the gradient heuristic ranks input dimensions only", field="layer")
        return gradient_ranking(network, x, label)
    raise SmtVerifyError(f"unknown heuristic '{heuristic}'; use one of {', '.join(HEURISTICS)}", field="heuristic")


def select_features(network: Network, x: np.ndarray, n: int, heuristic: str, label: int,
                    layer: str | None = None, exclude: np.ndarray | list[int] = ()) -> np.ndarray:
    """The best `n` dimensions not in `exclude` (DLV's rounds exclude those already manipulated)."""
    ranking = rank_features(network, x, heuristic, label, layer)
    return ranking[~np.isin(ranking, np.asarray(exclude, dtype=np.int64))][:n]

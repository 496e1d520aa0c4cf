"""Properties built in code rather than read from VNN-LIB: one decision's robustness, a sub-box."""
from __future__ import annotations

import numpy as np

from ..errors import SmtVerifyError
from ..network import Network
from ..vnnlib import Case, InputBox, OutputConstraint, Property


def case_within(case: Case, lo: np.ndarray, hi: np.ndarray) -> Case:
    """The same unsafe condition over a sub-box (for attacks near a solver's model)."""
    return Case(InputBox.from_floats(lo, hi), case.unsafe)


def robustness_property(network: Network, x: np.ndarray, label: int, eps: float, low: float = 0.0,
                        high: float = 1.0) -> Property:
    """The L-infinity robustness of one decision as a property: unsafe iff some other class
    scores at least as high as `label` somewhere in the ball (clipped to [low, high])."""
    if not 0 <= label < network.n_outputs:
        raise SmtVerifyError(f"label {label} is not a class of a network with {network.n_outputs} outputs",
                             field="--label")
    if not (np.isfinite(eps) and eps >= 0):
        raise SmtVerifyError(f"eps must be a non-negative finite number, not {eps}", field="--eps")
    centre = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(centre)):
        raise SmtVerifyError("the input holds NaN or infinite values", field="--input")
    box = InputBox.from_floats(np.clip(centre - eps, low, high), np.clip(centre + eps, low, high))
    constraints = []
    for other in range(network.n_outputs):
        if other != label:
            row = np.zeros((1, network.n_outputs))
            row[0, label], row[0, other] = 1.0, -1.0         # y_label - y_other <= 0
            constraints.append(OutputConstraint(row, np.zeros(1), np.zeros(1, bool)))
    return Property(network.path, network.n_inputs, network.n_outputs, (Case(box, tuple(constraints)),))

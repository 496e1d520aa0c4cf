"""The step kinds of a chain, one module each, behind one interface (base.Step), and the registry
of the ONNX operators compiled to a step of their own (the affine ones are compiled by chain.py)."""
from __future__ import annotations

from .affine import Affine
from .base import Bounds, Elementwise, LinearRelaxation, Nonlinear, Step
from .leaky_relu import LeakyRelu
from .maxpool import MaxPool, PoolRelaxation, window_groups
from .relu import Kink, Relu
from .smooth import Sigmoid, Smooth, Tanh

# ONNX op type -> its step kind (each built by from_layer(layer, input shape, file)).
STEP_KINDS: dict[str, type[Nonlinear]] = {
    "Relu": Relu,
    "LeakyRelu": LeakyRelu,
    "Sigmoid": Sigmoid,
    "Tanh": Tanh,
    "MaxPool": MaxPool,
}

__all__ = ["Affine", "Bounds", "Elementwise", "Kink", "LeakyRelu", "LinearRelaxation", "MaxPool", "Nonlinear",
           "PoolRelaxation", "Relu", "STEP_KINDS", "Sigmoid", "Smooth", "Step", "Tanh", "window_groups"]

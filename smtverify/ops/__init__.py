"""ONNX operators, one class each; importing this package registers them all."""
from . import activation, arithmetic, conv, normalization, pooling, shape  # importing registers them
from .base import REGISTRY, NodeSpec, Operator, supported_operators

__all__ = ["REGISTRY", "NodeSpec", "Operator", "supported_operators",
           "activation", "arithmetic", "conv", "normalization", "pooling", "shape"]

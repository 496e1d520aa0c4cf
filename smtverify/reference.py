"""The independent executor: onnxruntime runs the original ONNX file.

smtverify's own numpy executor drives the search; every counterexample is confirmed here, by a
separate, widely used implementation, so a bug in one executor cannot produce a false UNSAFE.
"""
from __future__ import annotations

import numpy as np

from .network import Network


class OnnxRuntimeExecutor:
    """Runs a network's ONNX file with onnxruntime on the CPU, one thread, in float32."""

    def __init__(self, network: Network) -> None:
        import onnxruntime   # loaded on first use: only confirmation needs it

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.network = network
        self.session = onnxruntime.InferenceSession(network.path, options, providers=["CPUExecutionProvider"])
        declared = self.session.get_inputs()[0]
        self.input_name = declared.name
        self.fixed_batch = network.native_batch and not isinstance(declared.shape[0], str)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Outputs of a batch, flattened per input: (B, n_outputs), float32."""
        batch = self.network.as_batch(x).astype(np.float32)
        if self.network.native_batch and not self.fixed_batch:
            outputs = [self._run(batch)]
        else:
            outputs = [self._run(x[None] if self.network.native_batch else x) for x in batch]
        return np.concatenate([o.reshape(-1, self.network.n_outputs) for o in outputs])

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def classify(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

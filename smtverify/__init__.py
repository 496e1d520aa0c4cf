"""smtverify: DLV-style safety verification of neural-network classification decisions."""
from __future__ import annotations

from typing import Any

from .errors import SmtVerifyError

__version__ = "0.1.0"
__all__ = ["Network", "SmtVerifyError", "load_onnx", "__version__"]


def __getattr__(name: str) -> Any:
    """`Network` and `load_onnx` import onnx, a second or more on a loaded machine: they load on
    first use, so that `smtverify --help` is quick and a command's --timeout clock, started on
    entry, covers reading the model too."""
    if name == "load_onnx":
        from .onnx_import import load_onnx
        return load_onnx
    if name == "Network":
        from .network import Network
        return Network
    raise AttributeError(f"module 'smtverify' has no attribute '{name}'")

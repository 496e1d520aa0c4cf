"""smtverify: DLV-style safety verification of neural-network classification decisions."""
from .errors import SmtVerifyError
from .network import Network
from .onnx_import import load_onnx

__version__ = "0.1.0"
__all__ = ["Network", "SmtVerifyError", "load_onnx", "__version__"]

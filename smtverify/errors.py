"""The project's own error types.

Every error raised for bad input is an `SmtVerifyError`: the CLI prints it on one line and exits
non-zero. Messages name the file, and where it applies the node, line or field at fault, so a user
can fix the input without reading a traceback.
"""
from __future__ import annotations

from pathlib import Path


class SmtVerifyError(Exception):
    """Base class: a problem with the user's input, reported before any solving starts."""

    def __init__(self, what: str, *, file: str | Path | None = None, node: str | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.what = what
        self.file = str(file) if file is not None else None
        self.node = node
        self.line = line
        self.field = field
        super().__init__(self._compose())

    def _compose(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file if self.line is None else f"{self.file}:{self.line}")
        if self.node is not None:
            where.append(f"node '{self.node}'")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.what}" if where else self.what


class ModelError(SmtVerifyError):
    """The ONNX file cannot be read or is not a valid model (malformed, truncated, fails the checker)."""


class UnsupportedOperatorError(ModelError):
    """The model uses an operator, or an operator form, that smtverify cannot execute exactly."""


class MissingInitializerError(ModelError):
    """A node reads a tensor that no node, input, initializer or constant produces."""


class InvalidWeightsError(ModelError):
    """A weight tensor holds NaN or infinity."""


class ExternalDataError(ModelError):
    """External tensor data is missing or points outside the model's own folder."""


class InputShapeError(SmtVerifyError):
    """An input array does not have the shape the network expects."""


class InputFileError(SmtVerifyError):
    """An input file (npy, npz, png) cannot be read."""


class VnnlibError(SmtVerifyError):
    """A VNN-LIB property file is malformed or uses a construct smtverify does not support."""

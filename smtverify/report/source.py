"""What a report is drawn from: a run folder's manifest, summary, journal and example files, or a
command's record alone (certify and vnnlib write no folder).

A report is rendered after a run, perhaps from a folder that was moved or copied elsewhere, or from
one a kill left half-written; so reading is forgiving where the run's own files allow it (an
absent manifest or journal, an example file that was deleted: shown as missing, never a crash),
and strict only where nothing can be shown (no summary: that is a bad folder, named as such).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SmtVerifyError
from ..run_folder import JOURNAL, MANIFEST, SUMMARY, Journal

COMMANDS = ("search", "batch", "bench", "certify", "vnnlib")


@dataclass
class Source:
    """A run: its command, its record (summary.json or --json), and, when it has a folder, the
    manifest and the journal's records."""

    command: str
    summary: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    folder: Path | None = None

    @property
    def complete(self) -> bool:
        """False only when the run said so (an interrupt); a record without the key is whole."""
        return self.summary.get("complete", True) is not False

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.journal if r.get("kind") == kind]

    def file(self, name: str | None) -> Path | None:
        """A file a record names, found where it is now: in the run folder by its relative path or
        its name (the folder may have moved since), else as written; None when it is gone."""
        if not name:
            return None
        named = Path(name)
        candidates = []
        if self.folder is not None:
            candidates += [self.folder / named, self.folder / named.name]
        candidates.append(named)
        return next((c for c in candidates if c.is_file()), None)

    def png(self, name: str | Path | None) -> bytes | None:
        path = self.file(str(name)) if name else None
        return path.read_bytes() if path is not None else None

    def model_sha256(self) -> str | None:
        """From the manifest; for a record alone, of the model file as it is now."""
        if self.manifest.get("model_sha256"):
            return self.manifest["model_sha256"]
        from ..run_folder import sha256_of_file

        model = self.summary.get("model")
        return sha256_of_file(model) if model and Path(model).is_file() else None


def read_folder(path: str | Path) -> Source:
    """A run folder as a Source; a path that is no run folder is a named error."""
    folder = Path(path)
    if not folder.is_dir():
        raise SmtVerifyError("is not a run folder (no such folder)" if not folder.exists() else
                             "is a file, not a run folder", file=folder, field="RUN_DIR")
    if not (folder / SUMMARY).is_file():
        raise SmtVerifyError(f"holds no {SUMMARY}: not a run folder of search, batch or bench (or its run "
                             "was killed before it wrote one)", file=folder, field="RUN_DIR")
    summary = _json(folder / SUMMARY)
    manifest = _json(folder / MANIFEST) if (folder / MANIFEST).is_file() else {}
    journal = Journal(folder / JOURNAL).records()
    return Source(command_of(manifest, summary, folder), summary, manifest, journal, folder)


def _json(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SmtVerifyError(f"cannot be read as JSON: {error}", file=path) from None
    if not isinstance(record, dict):
        raise SmtVerifyError("holds no JSON object", file=path)
    return record


def command_of(manifest: dict[str, Any], summary: dict[str, Any], folder: Path) -> str:
    """The manifest says which command ran; without one, the summary's shape does."""
    command = manifest.get("command")
    if command in COMMANDS:
        return command
    if "per_eps" in summary:
        return "batch"
    if "instances" in summary and "solved" in summary:
        return "bench"
    if "examples" in summary or "grids" in summary or "per_span" in summary:
        return "search"
    raise SmtVerifyError("its summary.json is of no command a report knows (search, batch, bench)",
                         file=folder, field="RUN_DIR")


def example_fields(path: Path | None) -> dict[str, Any]:
    """The scalars of an example's npz (classes, distances, png name); empty when unreadable."""
    if path is None:
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key].item() for key in data.files if data[key].ndim == 0}
    except (OSError, ValueError, KeyError):
        return {}

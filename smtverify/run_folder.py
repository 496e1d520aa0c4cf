"""A long run's folder: what ran, what it found as it went, and what it came to.

Every long command (search, batch, bench) writes into one folder:

    run.json        the manifest: command, model and its sha256, inputs and their sha256, the
                    settings that decide the results, versions of smtverify and of its engines
    journal.jsonl   one JSON object per line, appended and flushed the moment a result is known
                    (an item, an example, an instance, a grid): an interrupted run keeps them
    summary.json    the command's record (what `--json` prints), written at the end and on an
                    interrupt, with "complete": false then
    report.html     the self-contained report, rendered from the files above

A folder holding files is refused unless the run resumes (the journal kept, the manifest's
settings compared so two different runs never mix) or is forced (the run's files cleared).
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import __version__
from .errors import SmtVerifyError

MANIFEST, JOURNAL, SUMMARY, REPORT = "run.json", "journal.jsonl", "summary.json", "report.html"


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of_array(array: np.ndarray) -> str:
    """Of the values, their dtype and shape: the same inputs read from a PNG or an npy agree."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """smtverify's and its engines': what a result depends on, for a manifest."""
    import onnx
    import onnxruntime
    import z3

    return {"smtverify": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "z3": z3.get_version_string()}


class Journal:
    """Records of one kind or more, a JSON object a line, each flushed as it is appended."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The records written so far (of `kind`, if given). A torn last line, from a kill in the
        middle of a write, is dropped: its result was not complete."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and (kind is None or record.get("kind") == kind):
                records.append(record)
        return records

    def append(self, kind: str, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"kind": kind, **record}) + "\n")


class RunFolder:
    """One run's folder (see the module's docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal = Journal(self.path / JOURNAL)

    @classmethod
    def prepare(cls, path: str | Path, command: str, identity: dict[str, Any], resume: bool = False,
                force: bool = False, clear: Iterable[str] = ()) -> "RunFolder":
        """The folder for a run of `command` whose results depend on `identity` (model and inputs
        with their sha256, settings). A folder holding files is refused unless `resume` (then its
        manifest must be of the same command and identity) or `force` (then this module's files
        and those matching the globs in `clear` go). A new or forced run writes its manifest."""
        folder = cls(path)
        if folder.path.exists() and not folder.path.is_dir():
            raise SmtVerifyError("is a file, not a folder", file=folder.path, field="--out")
        if not folder.path.parent.is_dir():
            raise SmtVerifyError(f"the folder {folder.path.parent} does not exist", file=folder.path, field="--out")
        try:
            folder.path.mkdir(exist_ok=True)
        except OSError as error:
            raise SmtVerifyError(f"cannot make the run folder: {error.strerror}", file=folder.path,
                                 field="--out") from None
        used = any(folder.path.iterdir())
        if resume:
            if not (folder.path / MANIFEST).is_file():
                raise SmtVerifyError(f"holds no run to resume (no {MANIFEST})", file=folder.path, field="--resume")
            folder.check_same_run(command, identity)
            return folder
        if used and not force:
            raise SmtVerifyError("holds files already: --resume to go on with its run, --force to start over",
                                 file=folder.path, field="--out")
        if force:
            for pattern in (MANIFEST, JOURNAL, SUMMARY, REPORT, *clear):
                for stale in folder.path.glob(pattern):
                    if stale.is_file():
                        stale.unlink()
        folder.write_json(MANIFEST, {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     **identity, "versions": versions()})
        return folder

    def check_same_run(self, command: str, identity: dict[str, Any]) -> None:
        """A resumed run goes on with the same work: the same command, model, inputs and settings
        (JSON-compared); the first difference is named."""
        manifest = self.manifest()
        if manifest.get("command") != command:
            raise SmtVerifyError(f"holds a run of `{manifest.get('command')}`, not of `{command}`",
                                 file=self.path, field="--resume")
        for key, value in identity.items():
            if json.loads(json.dumps(value)) != manifest.get(key):
                raise SmtVerifyError(f"its run had a different {key} ({manifest.get(key)!r}, now {value!r}): "
                                     "resume with the same options, or --force to start over",
                                     file=self.path, field="--resume")

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SmtVerifyError(f"its {MANIFEST} cannot be read: {error}", file=self.path) from None

    def write_json(self, name: str, record: dict[str, Any]) -> Path:
        """Written whole (renamed into place), so a kill never leaves half a file."""
        path = self.path / name
        partial = path.with_name(name + ".partial")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(path)
        return path

    def write_summary(self, record: dict[str, Any], complete: bool) -> Path:
        return self.write_json(SUMMARY, {**record, "complete": complete})

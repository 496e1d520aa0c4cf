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
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import write_whole
from .errors import SmtVerifyError

MANIFEST, JOURNAL, SUMMARY, REPORT = "run.json", "journal.jsonl", "summary.json", "report.html"
ITEMS, RESULTS, EXAMPLES, EXPORT = "items.csv", "results.csv", "examples", "export"   # batch's, bench's, export's
SEARCH_FILES = ("example_*", "original*.png", "retrain.npz")                          # a search's
RUN_FILES = (MANIFEST, JOURNAL, SUMMARY, REPORT, ITEMS, RESULTS, EXAMPLES, EXPORT, "*.counterexample", *SEARCH_FILES)


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
                force: bool = False) -> "RunFolder":
        """The folder for a run of `command` whose results depend on `identity` (model and inputs
        with their sha256, settings). A folder holding files is refused unless `resume` (then its
        manifest must be of the same command and identity) or `force` (then the files any run
        writes, RUN_FILES, go, whichever command wrote them; a folder that is not a run folder is
        never cleared). A new or forced run writes its manifest."""
        folder = cls(path)
        if folder.path.exists() and not folder.path.is_dir():
            raise SmtVerifyError("is a file, not a folder", file=folder.path, field="--out")
        if resume:
            if not (folder.path / MANIFEST).is_file():
                raise SmtVerifyError("no such run folder" if not folder.path.exists() else
                                     f"holds no run to resume (no {MANIFEST})", file=folder.path, field="--resume")
            folder.check_same_run(command, identity)
            return folder
        folder.make()
        if any(folder.path.iterdir()):
            if not force:
                raise SmtVerifyError("holds files already: --resume to go on with its run, --force to start over",
                                     file=folder.path, field="--out")
            if not (folder.path / MANIFEST).is_file():
                raise SmtVerifyError(f"holds files but is not a run folder (no {MANIFEST}): --force clears run "
                                     "folders only; choose another --out", file=folder.path, field="--out")
            folder.clear()
        folder.write_json(MANIFEST, {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                     **identity, "versions": versions()})
        return folder

    def make(self) -> None:
        if not self.path.parent.is_dir():
            raise SmtVerifyError(f"the folder {self.path.parent} does not exist", file=self.path, field="--out")
        try:
            self.path.mkdir(exist_ok=True)
        except OSError as error:
            raise SmtVerifyError(f"cannot make the run folder: {error.strerror}", file=self.path,
                                 field="--out") from None

    def clear(self) -> None:
        """Every file a run of any command writes here, so a forced run never mixes with the last."""
        for pattern in RUN_FILES:
            for stale in self.path.glob(pattern):
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()

    def check_same_run(self, command: str, identity: dict[str, Any]) -> None:
        """A resumed run goes on with the same work: the same command, model, inputs and settings
        (JSON-compared; a file is compared by its sha256, not by how its path was written); the
        first difference is named."""
        manifest = self.manifest()
        if manifest.get("command") != command:
            raise SmtVerifyError(f"holds a run of `{manifest.get('command')}`, not of `{command}`",
                                 file=self.path, field="--resume")
        for key, value in identity.items():
            if f"{key}_sha256" in identity:
                continue
            difference = _first_difference(key, manifest.get(key), json.loads(json.dumps(value)))
            if difference:
                raise SmtVerifyError(f"its run had a different {difference}: resume with the same options, or "
                                     "--force to start over", file=self.path, field="--resume")

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SmtVerifyError(f"its {MANIFEST} cannot be read: {error}", file=self.path) from None

    def write_json(self, name: str, record: dict[str, Any]) -> Path:
        """Written whole (renamed into place), so a kill never leaves half a file."""
        text = json.dumps(record, indent=1)
        return write_whole(self.path / name, lambda partial: partial.write_text(text))

    def write_summary(self, record: dict[str, Any], complete: bool) -> Path:
        return self.write_json(SUMMARY, {**record, "complete": complete})


WHAT_DIFFERS = {"model_sha256": "model (the file's contents)", "input_sha256": "input (its values)",
                "images_sha256": "set of images (--images, --limit)", "instances_sha256": "instances file's contents"}


def _first_difference(key: str, before: Any, now: Any) -> str:
    """'' when equal; else the first differing key, with both values."""
    if isinstance(before, dict) and isinstance(now, dict):
        for sub in sorted(set(before) | set(now)):
            found = _first_difference(f"{key}.{sub}", before.get(sub), now.get(sub))
            if found:
                return found
        return ""
    if before == now:
        return ""
    return WHAT_DIFFERS.get(key, f"{key} ({before!r}, now {now!r})")

"""The parts every report shares: what was checked (model, inputs, their sha256), the settings and
versions it depends on, a note when the run was cut short, and the gallery of examples.

They are here once so that a search, a batch and a certification say these things the same way:
a reader comparing two reports should find the model's hash and the versions in the same place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .. import __version__
from .page import Html, figure, fmt, img, join, key_values, note, section
from .source import Source

GALLERY_CAP = 48           # examples shown inline at most; the rest are counted and left in the folder
PANEL_WIDTH = 520          # shown size of a panel (its PNG is not re-encoded): two a row
IDENTITY_KEYS = ("command", "created", "versions", "model", "model_sha256")


@dataclass
class Shown:
    """One example in the gallery: its picture (the panel, else a plain picture) and caption."""

    picture: bytes | None
    classes: str
    lines: list[str] = field(default_factory=list)


def classes_line(original: Any, new: Any) -> str:
    return f"class {fmt(original)} \u2192 {fmt(new)}"


def distances_line(example: dict[str, Any]) -> str:
    """L0, L2 and Linf, those the example knows."""
    parts = [f"{name} {fmt(example[key])}" for name, key in (("L0", "l0"), ("L2", "l2"), ("Linf", "linf"))
             if example.get(key) is not None]
    return "  ".join(parts)


def gallery(shown: list[Shown], total: int, where: str) -> Html:
    """The first GALLERY_CAP examples inline; how many more there are and where to find them."""
    figures = []
    for item in shown[:GALLERY_CAP]:
        picture = (img(item.picture, item.classes, PANEL_WIDTH) if item.picture is not None
                   else Html('<div class="note info">no picture (not an image input, or its file is gone)</div>'))
        figures.append(figure(picture, [item.classes, *item.lines]))
    parts = [Html('<div class="gallery">' + "".join(figures) + "</div>")] if figures else []
    hidden = total - min(len(shown), GALLERY_CAP)
    if hidden > 0:
        parts.append(note(f"{hidden} more example{'s' if hidden != 1 else ''} not shown here: {where}."))
    return join(parts)


def interrupted(source: Source, what: str) -> Html:
    """A warning, first thing under the verdict, that the results are partial."""
    if source.complete:
        return Html("")
    return note(f"This run did not finish: it was interrupted, or stopped at its --timeout (complete: false in "
                f"summary.json). {what}", "warn")


def checked(source: Source, extra: Iterable[tuple[str, Any]] = ()) -> Html:
    """What was checked: the model with its sha256, the inputs with theirs, as the manifest says."""
    record, manifest = source.summary, source.manifest
    pairs: list[tuple[str, Any]] = [("model", manifest.get("model") or record.get("model")),
                                    ("model sha256", source.model_sha256())]
    pairs += list(extra)
    for key, value in manifest.items():
        if key.endswith("_sha256") and key != "model_sha256":
            name = key[:-len("_sha256")]
            pairs += [(name, manifest.get(name, record.get(name))), (f"{name} sha256", value)]
    if source.folder is not None:
        pairs.append(("run folder", str(source.folder)))
    if manifest.get("created"):
        pairs.append(("run created", manifest["created"]))
    return section("What was checked", key_values(_unique(pairs)))


def _unique(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    seen, kept = set(), []
    for key, value in pairs:
        if key not in seen and value is not None:
            seen.add(key)
            kept.append((key, value))
    return kept


def flattened(record: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings as dotted names (settings.span), lists as they are."""
    pairs: list[tuple[str, Any]] = []
    for key, value in record.items():
        if isinstance(value, dict):
            pairs += flattened(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def settings_and_versions(source: Source) -> Html:
    """The manifest's settings (what decides the results) and the versions they came from."""
    manifest = source.manifest
    settings = [(k, v) for k, v in flattened({k: v for k, v in manifest.items() if k not in IDENTITY_KEYS})
                if not k.endswith("_sha256")]
    if manifest.get("versions"):
        versions = manifest["versions"]
    else:
        from ..run_folder import versions as current_versions

        versions = current_versions()
    return join([section("Settings", key_values(settings)),
                 section("Versions", key_values(sorted(versions.items())))])


def footer(source: Source) -> str:
    when = f", run created {source.manifest['created']}" if source.manifest.get("created") else ""
    return (f"smtverify {__version__}: report of a `{source.command}` run{when}. Self-contained: every image "
            "is inline, nothing is fetched.")

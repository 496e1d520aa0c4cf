"""The reports of the commands that write no run folder, drawn from their --json record: certify
(one decision's L-infinity ball) and vnnlib (a competition property).

Both are single decisions, so the page is the verdict, the region it is about, and the evidence:
the smallest proven margin of a SAFE verdict (the float32 rounding below it is not covered, so a
reader must see the number), or the counterexample of an UNSAFE one, drawn as a panel when the
input is an image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SmtVerifyError
from .page import Html, banner, fmt, img, join, key_values, note, paragraph, section, table
from .sections import Shown, checked, classes_line, distances_line, footer, gallery, settings_and_versions
from .source import Source

VALUES_SHOWN = 64          # counterexample inputs and outputs listed at most
DIMENSIONS_SHOWN = 16      # a property box's dimensions listed at most
CASES_SHOWN = 8

MARGIN_MEANING = ("The margin is the logit of the kept class minus the largest other logit; it was proven at least "
                  "this large on every point of the region. The network runs in float32, so a rounding error larger "
                  "than this margin is not protected against.")


def render_certify(source: Source) -> tuple[str, list[str], str]:
    """(title, body parts, footer) of a certify record's report."""
    record = source.summary
    verdict = str(record.get("verdict", "UNKNOWN"))
    headline = (f"class {fmt(record.get('label'))} of {Path(str(record.get('input', 'the input'))).name} on the "
                f"L-infinity ball of radius {fmt(record.get('eps'))}; decided in {fmt(record.get('seconds'))} s")
    if record.get("reason"):
        headline += f"; {record['reason']}"
    parts = [banner(verdict, headline, record.get("guarantee") or "no guarantee: not decided"),
             checked(source, [("input", record.get("input")), ("label", record.get("label"))]),
             section("Region", key_values([("region", "every input within L-infinity distance eps of the input, "
                                                      "clipped to the domain"), ("eps", record.get("eps")),
                                           ("domain", record.get("domain"))]), _input_picture(record)),
             section("Proven margin", _margin(record)),
             section("Counterexample", _certify_counterexample(record)),
             section("Statistics", key_values(sorted((record.get("stats") or {}).items()))),
             settings_and_versions(source)]
    return f"smtverify certify: {Path(str(record.get('model', 'model'))).stem}", parts, footer(source)


def _margin(record: dict[str, Any]) -> Html:
    if record.get("min_margin") is None:
        return Html("")
    return join([key_values([("smallest proven margin", record["min_margin"])]), paragraph(MARGIN_MEANING)])


def _network_and_input(record: dict[str, Any]):
    """The model and the input as certify read them, or None when either is gone or no image."""
    from ..inputs import read_input
    from ..onnx_import import load_onnx
    from ..png import is_image

    model, given = record.get("model"), record.get("input")
    if not (model and given and Path(model).is_file() and Path(given).is_file()):
        return None
    try:
        network = load_onnx(model)
        x = read_input(given, network)
    except SmtVerifyError:
        return None
    return (network, x) if is_image(tuple(x.shape)) else None


def _input_picture(record: dict[str, Any]) -> Html:
    import io

    from PIL import Image

    from ..png import to_pixels

    found = _network_and_input(record)
    if found is None or record.get("counterexample"):
        return Html("")        # a counterexample's panel shows the input
    pixels = to_pixels(found[1])
    pixels = pixels.reshape(pixels.shape[-2:]) if pixels.ndim == 2 or pixels.shape[0] == 1 else np.moveaxis(pixels, 0, -1)
    picture = Image.fromarray(pixels)
    scale = max(1, 168 // max(picture.size))
    buffer = io.BytesIO()
    picture.resize((picture.size[0] * scale, picture.size[1] * scale), Image.NEAREST).save(buffer, format="PNG")
    return Html('<figure class="pixels">' + img(buffer.getvalue(), "the input") + "<figcaption>the input</figcaption></figure>")


def _certify_counterexample(record: dict[str, Any]) -> Html:
    cex = record.get("counterexample")
    if not cex:
        return Html("")
    lines = [distances_line(cex), f"file {cex['file']}" if cex.get("file") else "not saved (certify --out saves it)"]
    shown = Shown(_panel(record, cex), classes_line(record.get("label"), cex.get("new_class")), lines)
    return join([paragraph("Confirmed by onnxruntime; the panel shows the input, the counterexample and their "
                           "difference."), gallery([shown], 1, "")])


def _panel(record: dict[str, Any], cex: dict[str, Any]) -> bytes | None:
    """The counterexample's panel, drawn from the saved file and the input (an image input only)."""
    import io

    from ..grid import Example
    from ..panel import panel_image

    found = _network_and_input(record)
    if found is None or not cex.get("file") or not Path(cex["file"]).is_file():
        return None
    network, x = found
    try:
        adversarial = np.load(cex["file"], allow_pickle=False).astype(np.float32).reshape(x.shape)
    except (OSError, ValueError):
        return None
    logits = network.logits(adversarial[None], np.float32)[0]
    example = Example.of(adversarial, x, np.zeros(0, np.int64), int(record.get("label", 0)), logits)
    buffer = io.BytesIO()
    panel_image(x, example, original_logits=network.logits(x[None], np.float32)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def render_vnnlib(source: Source) -> tuple[str, list[str], str]:
    """(title, body parts, footer) of a vnnlib record's report."""
    record = source.summary
    word, verdict = str(record.get("result", "unknown")), str(record.get("verdict", ""))
    headline = (f"property {Path(str(record.get('property', ''))).name} of {Path(str(record.get('model', ''))).name}"
                f": {word} (sat: a counterexample exists; unsat: none does); decided in {fmt(record.get('seconds'))} s")
    if record.get("reason") or record.get("error"):
        headline += f"; {record.get('reason') or record.get('error')}"
    parts = [banner(f"{word} ({verdict})" if verdict else word, headline,
                    record.get("guarantee") or "no guarantee: not decided", _tone(word)),
             checked(source, [("property", record.get("property")), ("property sha256", _sha256(record.get("property")))]),
             section("Region", _property(record.get("property"))),
             section("Proven margin", _margin(record)),
             section("Counterexample", _vnnlib_counterexample(record.get("counterexample"))),
             section("Statistics", key_values(sorted((record.get("stats") or {}).items()))),
             settings_and_versions(source)]
    return f"smtverify vnnlib: {Path(str(record.get('property', 'property'))).stem}", parts, footer(source)


def _tone(word: str) -> str:
    return {"unsat": "safe", "sat": "unsafe", "error": "error"}.get(word, "unknown")


def _sha256(path: Any) -> str | None:
    from ..run_folder import sha256_of_file

    return sha256_of_file(path) if path and Path(path).is_file() else None


def _property(path: Any) -> Html:
    """The property's cases: each input box (its first dimensions) and its number of unsafe conditions."""
    from ..vnnlib import read_vnnlib

    if not path or not Path(path).is_file():
        return note("the property file is no longer there")
    try:
        prop = read_vnnlib(path)
    except SmtVerifyError as error:
        return note(f"the property cannot be read now: {error}")
    parts = [paragraph(f"{len(prop.cases)} case{'s' if len(prop.cases) != 1 else ''} over {prop.n_inputs} inputs "
                       f"and {prop.n_outputs} outputs; the property is violated (sat) if some input in a case's box "
                       "meets one of its unsafe output conditions.")]
    for k, case in enumerate(prop.cases[:CASES_SHOWN]):
        rows = [[i, case.box.lower[i], case.box.upper[i]] for i in range(min(len(case.box.lower), DIMENSIONS_SHOWN))]
        more = len(case.box.lower) - DIMENSIONS_SHOWN
        parts.append(paragraph(f"case {k + 1}: {len(case.unsafe)} unsafe condition(s), "
                               f"{sum(len(c.b) for c in case.unsafe)} linear row(s) on the outputs"
                               + (f"; the first {DIMENSIONS_SHOWN} of {len(case.box.lower)} inputs:" if more > 0 else ":")))
        parts.append(table(["input", "lower", "upper"], rows, [True, True, True]))
    if len(prop.cases) > CASES_SHOWN:
        parts.append(note(f"{len(prop.cases) - CASES_SHOWN} more cases in the property file."))
    return join(parts)


def _vnnlib_counterexample(cex: dict[str, Any] | None) -> Html:
    if not cex:
        return Html("")
    inputs, outputs = cex.get("inputs") or [], cex.get("outputs") or []
    rows = [[i, inputs[i] if i < len(inputs) else None, outputs[i] if i < len(outputs) else None]
            for i in range(min(max(len(inputs), len(outputs)), VALUES_SHOWN))]
    more = max(len(inputs), len(outputs)) - VALUES_SHOWN
    return join([paragraph(f"Confirmed by {cex.get('confirmed_by', 'onnxruntime')}: {len(inputs)} inputs, "
                           f"{len(outputs)} outputs."),
                 table(["index", "input", "output"], rows, [True, True, True]),
                 note(f"{more} more values: the --json record (or --out's result file) holds them all.") if more > 0 else ""])

"""What the command line prints: plain-text renderings of the records its commands emit (the same
records `--json` prints whole)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .verdict import Result


def info_text(record: dict[str, Any]) -> str:
    def shape(s: list) -> str:
        return "[" + ",".join(str(d) for d in s) + "]"
    rows = [(str(i), l["name"], l["op_type"], shape(l["shape"]), "" if l["supported"] else "UNSUPPORTED")
            for i, l in enumerate(record["layers"], start=1)]
    widths = [max(len(r[c]) for r in rows + [("#", "layer", "operator", "output shape", "")]) for c in range(4)]
    lines = [f"model:  {record['model']} (opset {record['opset']})",
             f"input:  {record['input']['name']} {shape(record['input']['shape'])}",
             f"output: {record['output']['name']} {shape(record['output']['shape'])}", ""]
    for row in [("#", "layer", "operator", "output shape", "")] + rows:
        lines.append(("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]).rstrip())
    lines.append("")
    lines.append("operators: " + ", ".join(f"{op} x{n}" for op, n in record["operator_counts"].items()))
    if record["fully_supported"]:
        lines.append(f"supported: yes, every operator ({len(rows)} layers)")
    else:
        lines.append("supported: NO")
        lines.extend(f"  {p}" for p in record["problems"])
    return "\n".join(lines)


def models_text(record: dict[str, Any]) -> str:
    """The bundled models, a line each: what a user can type where a model path goes."""
    rows = [(m["name"], "x".join(str(d) for d in m["input_shape"]), f"{m['classes']} classes", m["about"])
            for m in record["models"]]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[3] for r in rows)


def certify_text(record: dict[str, Any]) -> str:
    lines = [f"{record['verdict']}: class {record['label']} within L-inf eps={record['eps']} of {record['input']} "
             f"({record['seconds']:.2f} s)"]
    if record["min_margin"] is not None:
        lines.append(f"  smallest proven margin: {record['min_margin']:.6g} (the least by which the bounds kept the "
                     "ball from the unsafe set; the guarantee refers to it)")
    counterexample = record.get("counterexample")
    if counterexample:
        lines.append(f"  counterexample: class {counterexample['new_class']}, L-inf distance "
                     f"{counterexample['linf']:.6g}" + (f", saved to {counterexample['file']}" if "file" in counterexample else ""))
    lines.append(f"  guarantee: {record['guarantee']}")
    return "\n".join(lines)


def result_details(result: Result) -> str:
    """A decided property's verdict, guarantee, counterexample and stats, a line each."""
    lines = [f"verdict: {result.verdict.value} in {result.seconds:.3f} s ({result.guarantee})"]
    if result.min_margin is not None:
        lines.append(f"smallest proven margin: {result.min_margin:.6g}")
    if result.counterexample is not None:
        cex = result.counterexample
        lines.append(f"counterexample (confirmed by {cex.executor}): input {np.array2string(cex.input.reshape(-1), precision=8, threshold=12)}")
        lines.append(f"  output {np.array2string(cex.output.reshape(-1), precision=6)}")
    lines.append("stats: " + ", ".join(f"{k}={v}" for k, v in result.stats.items()))
    return "\n".join(lines)


def search_text(record: dict[str, Any]) -> str:
    lines = [f"{record['verdict']}: class {record['label']}, {record['points_evaluated']:,} of "
             f"{record['grid_points']:,} grid points in {record['seconds']:.2f} s "
             f"({record['points_per_second']:,.0f} points/s end to end, "
             f"{record['evaluation_points_per_second']:,.0f} evaluating; {len(record['grids'])} grids, "
             f"{len(record['rounds'])} rounds)"]
    if record.get("earlier_points"):
        lines.append(f"  resumed: {record['earlier_points']:,} of these points were evaluated by the run it went on "
                     "from (the rates count this run's only)")
    if record["reason"]:
        lines.append(f"  {record['reason']}")
    lines.append(f"  guarantee: {record['guarantee']}")
    for h in record["hidden"]:
        proofs = ", ".join(f"{n} by {kind}" for kind, n in h.get("spurious_proofs", {}).items())
        lines.append(f"  layer {h['layer']}: hidden dims {h['hidden_dims']}, refinement {h['refinement']}, "
                     f"{h['hidden_candidates']} candidates: {h['confirmed']} confirmed, {h['spurious']} spurious"
                     f"{f' ({proofs})' if proofs else ''}, {h['unconfirmed']} unconfirmed, {h['unknown']} unknown; "
                     f"{h['seconds']:.1f} s")
    for e in record["examples"][:10]:
        lines.append(f"  example{' (between grid points)' if e['off_grid'] else ''}: class {e['new_class']}, {e['l0']} pixels changed {e['changed_dims'][:12]}, "
                     f"L1 {e['l1']:.4g} L2 {e['l2']:.4g} Linf {e['linf']:.4g} -> {e['input_file']}")
    if len(record["examples"]) > 10:
        lines.append(f"  ... {len(record['examples']) - 10} more examples under {record['out']}")
    if record["examples_not_written"]:
        lines.append(f"  {record['examples_not_written']:,} more examples found, not written (--max-files "
                     f"{record['max_files']:,}; {record['examples_found']:,} found in all)")
    return "\n".join(lines)


def minimal_text(record: dict[str, Any]) -> str:
    """--minimal's answer; a ladder with no example says so in words (the record holds null)."""
    if record["min_span"] is None:
        found = f"no adversarial example at any span of {record['spans']}"
    else:
        found = (f"smallest span with an adversarial example {record['min_span']}, fewest changed pixels "
                 f"{record['min_pixels']} (at span {record['min_pixels_span']})")
    lines = [f"minimal manipulation of pixels {record['dims']} (steps {record['steps']}): {found}; "
             f"{record['points_evaluated']:,} points in {record['seconds']:.2f} s"]
    lines += [f"  span {r['span']}: {r['verdict']}" + ("" if r["min_pixels"] is None else
                                                       f", fewest changed pixels {r['min_pixels']}")
              for r in record["per_span"]]
    return "\n".join(lines)


def demo_text(s: dict[str, Any]) -> str:
    find, prove, cert = s["find"], s["prove"], s["certify"]
    lines = [f"smtverify demo: bundled {s['model']}, test image {s['image']} (class {s['label']})", "",
             "1. executors agree on the bundled test images:"]
    lines += [f"   {r['model']:<11} {r['same_class']}/{r['images']} same class, accuracy {r['accuracy']:.4f}, "
              f"max |diff| {r['max_abs_diff']:.1e}" for r in s["models"]]
    fs = find["settings"]
    lines.append(f"2. DLV search, {fs['heuristic']} heuristic, {fs['features']} features a round, span {fs['span']}, "
                 f"steps {fs['steps']}: {find['verdict']} after {len(find['rounds'])} rounds, "
                 f"{find['points_evaluated']:,} points in {find['seconds']:.2f} s")
    for e in find["examples"]:
        lines.append(f"   adversarial example: class {s['label']} -> {e['new_class']}, {e['l0']} pixels changed, "
                     f"L2 {e['l2']:.3f}, Linf {e['linf']:.3f}, confirmed by {e['confirmed_by']}: {e['input_file']}")
    ps = prove["settings"]
    lines.append(f"3. the round-1 features with span {ps['span']}, steps {ps['steps']}: {prove['verdict']}, "
                 f"all {prove['grid_points']:,} grid points evaluated in {prove['seconds']:.2f} s "
                 f"({prove['points_per_second']:,.0f} points/s)")
    if prove["cells"]:
        lines.append(f"   continuous region between the grid points: {prove['cells']['proven']} of "
                     f"{prove['cells']['total']} cells proven by the certification engine")
    lines.append(f"4. L-infinity ball eps={cert['eps']} around the image: {cert['verdict']} "
                 f"in {cert['seconds']:.2f} s (continuous region, bounds and Z3)")
    lines += ["", f"files in {s['out']}/: adversarial/ and safe/ (examples as npz, PNG and panel, retrain.npz, "
              f"report.html), certify.html, summary.json; {s['seconds']:.1f} s in all"]
    return "\n".join(lines)


def eval_batch_text(classes: list[int], labels, shown: int = 20) -> str:
    """A batch's classes (the first `shown`), each against its label where there are labels, and
    the accuracy."""
    lines = []
    for i, found in enumerate(classes[:shown]):
        if labels is None:
            lines.append(f"{i:>5}: class {found}")
        else:
            verdict = "" if found == labels[i] else "   <- misclassified"
            lines.append(f"{i:>5}: class {found}, label {int(labels[i])}{verdict}")
    if len(classes) > shown:
        lines.append(f"  ... {len(classes) - shown} more (--json lists them all)")
    if labels is not None:
        correct = sum(int(c == l) for c, l in zip(classes, labels))
        lines.append(f"accuracy: {correct}/{len(classes)} = {correct / len(classes):.4f}")
    return "\n".join(lines)


def batch_text(summary: dict, out: str, total: int) -> str:
    """A batch run's figures: clean accuracy, then per eps (or span) the outcomes and verified accuracy."""
    size, safe = ("eps", "verified") if summary.get("mode", "certify") == "certify" else ("span", "grid-safe")
    lines = [f"{summary['items']} of {total} items done in {summary['seconds']:.1f} s "
             f"({summary['seconds_per_item']:.2f} s an item); {summary['images']} images, "
             f"clean accuracy {summary['clean_accuracy']:.2%}",
             f"{size:>8} {safe:>9} {'falsified':>10} {'unknown':>8} {'misclass.':>10} {safe + ' acc.':>14}"]
    for row in summary["per_eps"]:
        lines.append(f"{row['eps']:>8g} {row['verified']:>9} {row['falsified']:>10} {row['unknown']:>8} "
                     f"{row['misclassified']:>10} {row['verified_accuracy']:>14.2%}")
    if summary["items"] < total:
        lines.append(f"{total - summary['items']} items not done yet: the accuracies count their images as not "
                     f"{safe}")
    lines.append(f"files in {out}/: journal.jsonl (one line per item), items.csv, summary.json, examples/, report.html"
                 + ("" if summary["items"] == total else "; --resume goes on where this stopped"))
    return "\n".join(lines)


def interrupted_search_text(record: dict, out: str) -> str:
    """What an interrupted search did, and where its files are."""
    examples = "example_NNNN.npz (+ .png, .panel.png), retrain.npz, " if record["examples_written"] else ""
    return (f"search interrupted in round {record['round']} after {record['points_evaluated_in_grid']:,} points of its "
            f"grid; {record['examples_written']} example(s) written\n"
            f"files in {out}/: {examples}journal.jsonl, summary.json, report.html; --resume goes on where this stopped")

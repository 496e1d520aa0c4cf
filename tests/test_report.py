"""The HTML report of a run: real runs (a batch, a search, certifications) rendered, and the facts
checked in the page: the verdict and its guarantee verbatim, every example's classes, the proven
margin, the robustness table and plots; self-contained (images are inline PNGs, nothing fetched);
an unfinished run says so; `smtverify report` draws it again, and rejects what is no run folder."""
from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from smtverify import resources
from smtverify.cli import main
from smtverify.report import plots, render_record, write_report
from smtverify.verdict import GRID_GUARANTEE, SAFE_GUARANTEE, UNSAFE_GUARANTEE
from tests.conftest import SHARED, needs_shared


def text(value: str) -> str:
    """A value as the page holds it between tags."""
    return html.escape(value, quote=False)


def inline_pngs(page: str) -> list[bytes]:
    """Every image of the page, each checked to be an inline PNG that decodes; nothing else is
    fetched: no src or href but data URIs, no script, no style sheet import."""
    sources = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', page)
    assert all(s.startswith("data:image/png;base64,") for s in sources), [s[:40] for s in sources]
    assert not re.search(r"https?://", page) and "<script" not in page and "url(" not in page
    images = []
    for source in sources:
        png = base64.b64decode(source.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(png)).load()
        images.append(png)
    return images


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    """A certify batch of 10 digits at two radii: some verified, some falsified (image 8)."""
    folder = tmp_path_factory.mktemp("batch") / "run"
    assert main(["batch", "digits_mlp", "--eps-sweep", "0.03,0.05", "--limit", "10", "--item-timeout", "10",
                 "--out", str(folder), "--quiet"]) == 0
    return folder


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    """DLV's rounds on a bundled MNIST digit until examples appear (round 3), 5 of them written."""
    base = tmp_path_factory.mktemp("search")
    images = resources.test_images("mnist_cnn")
    png = base / "digit.png"
    Image.fromarray(np.round(images.images[0].reshape(28, 28) * 255).astype(np.uint8)).save(png)
    folder = base / "run"
    assert main(["search", "mnist_cnn", "--input", str(png), "--label", str(int(images.labels[0])), "--span", "0.25",
                 "--steps", "2", "--features", "8", "--heuristic", "gradient", "--rounds", "4", "--all",
                 "--max-files", "5", "--out", str(folder), "--quiet"]) == 0
    return folder


def test_a_batch_report_shows_the_robustness_table_plots_guarantees_and_every_counterexample(batch_run):
    page = (batch_run / "report.html").read_text()      # written by the batch itself
    summary = json.loads((batch_run / "summary.json").read_text())
    items = [json.loads(line) for line in (batch_run / "journal.jsonl").read_text().splitlines()]
    falsified = [i for i in items if i["kind"] == "item" and i["outcome"] == "falsified"]
    assert falsified, "the run should have found a counterexample"
    assert text(SAFE_GUARANTEE) in page and text(UNSAFE_GUARANTEE) in page
    for row in summary["per_eps"]:
        assert f"{100 * row['verified_accuracy']:.2f}%" in page
    for item in falsified:
        assert f"class {item['label']} \u2192 {item['counterexample_class']}" in page
        assert item["example_file"].split("/")[-1] in page
    assert page.count('<span class="classes">') == len(falsified)
    images = inline_pngs(page)
    for item in falsified:      # its panel (original | adversarial | difference) inline, as written
        assert (batch_run / item["example_file"].replace(".npz", ".panel.png")).read_bytes() in images
    if plots.available():
        assert 'alt="verified accuracy against eps"' in page and 'alt="outcomes per class"' in page
        assert len(images) == len(falsified) + 2
    assert json.loads((batch_run / "run.json").read_text())["model_sha256"] in page
    assert "did not finish" not in page


def test_without_matplotlib_the_report_is_written_and_says_how_to_get_plots(batch_run, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    page = write_report(batch_run, tmp_path / "plain.html").read_text()
    assert plots.INSTALL_HINT in page and text(SAFE_GUARANTEE) in page
    assert 'alt="verified accuracy against eps"' not in page and 'alt="outcomes per class"' not in page


def test_a_search_mode_batch_report_gives_the_grids_guarantee_not_a_proofs(tmp_path):
    folder = tmp_path / "run"
    assert main(["batch", "digits_mlp", "--span", "0.25", "--limit", "4", "--out", str(folder), "--quiet"]) == 0
    page = (folder / "report.html").read_text()
    assert f"verified (SAFE_ON_GRID): {text(GRID_GUARANTEE)}" in page and text(SAFE_GUARANTEE) not in page
    assert "searched on DLV grids, span 0.25" in page and "<th>steps M</th><td>2</td>" in page
    inline_pngs(page)


def test_a_search_report_shows_the_verdict_rounds_and_each_examples_classes(search_run):
    page = (search_run / "report.html").read_text()
    summary = json.loads((search_run / "summary.json").read_text())
    assert summary["verdict"] == "UNSAFE"
    assert re.search(r'<div class="verdict">UNSAFE</div>', page) and text(summary["guarantee"]) in page
    assert len(summary["examples"]) == 5
    for example in summary["examples"]:
        assert f"class {example['original_class']} \u2192 {example['new_class']}" in page
        assert example["input_file"].split("/")[-1] in page
    assert f"{summary['examples_not_written']} more examples were found but not written" in page
    assert "<h2>Rounds</h2>" in page and "SAFE_ON_GRID" in page       # the grids of rounds 1 and 2
    images = inline_pngs(page)
    assert len(images) == 6 and (search_run / "original.png").read_bytes() in images
    for panel in search_run.glob("example_*.panel.png"):
        assert panel.read_bytes() in images
    assert json.loads((search_run / "run.json").read_text())["input_sha256"] in page


def test_certify_reports_show_the_proven_margin_or_the_counterexample(tmp_path, capsys):
    images = resources.test_images("digits_mlp")
    x = tmp_path / "x.npy"
    np.save(x, images.images[8])
    base = ["certify", "digits_mlp", "--input", str(x), "--label", str(int(images.labels[8])), "--json"]
    assert main(base + ["--eps", "0.01"]) == 0
    safe = json.loads(capsys.readouterr().out)
    assert safe["verdict"] == "SAFE"
    page = render_record("certify", safe)
    assert '<div class="verdict">SAFE</div>' in page and text(safe["guarantee"]) in page
    assert "smallest proven margin" in page and f"{safe['min_margin']:.6g}" in page
    assert len(inline_pngs(page)) == 1          # the input, drawn from the npy
    assert main(base + ["--eps", "0.05", "--out", str(tmp_path / "cex.npy")]) == 0
    unsafe = json.loads(capsys.readouterr().out)
    assert unsafe["verdict"] == "UNSAFE"
    page = render_record("certify", unsafe)
    assert text(UNSAFE_GUARANTEE) in page and "smallest proven margin" not in page
    assert f"class {unsafe['label']} \u2192 {unsafe['counterexample']['new_class']}" in page
    (panel,) = inline_pngs(page)
    width, height = Image.open(io.BytesIO(panel)).size
    assert width > 2 * height       # original | counterexample | difference


@needs_shared
def test_a_vnnlib_report_shows_the_word_the_box_and_the_counterexample(tmp_path, capsys):
    smoke = SHARED / "smoke"
    assert main(["vnnlib", str(smoke / "onnx/test_sat.onnx"), str(smoke / "vnnlib/test_prop.vnnlib"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    page = render_record("vnnlib", record)
    assert "sat (UNSAFE)" in page and text(record["guarantee"]) in page
    assert "1 case over 5 inputs and 5 outputs" in page
    assert all(f"{v:.6g}" in page for v in record["counterexample"]["inputs"])
    inline_pngs(page)


def test_a_batch_that_did_not_finish_says_so(tmp_path):
    """--timeout ends the run before any item begins: an unfinished run, reported as one."""
    folder = tmp_path / "run"
    assert main(["batch", "digits_mlp", "--eps", "0.05", "--limit", "5", "--timeout", "0.001", "--out", str(folder),
                 "--quiet"]) == 0
    assert json.loads((folder / "summary.json").read_text())["complete"] is False
    page = (folder / "report.html").read_text()
    assert "This run did not finish" in page and "0 of 5 items were decided" in page
    inline_pngs(page)


def test_smtverify_report_draws_the_same_report_again(batch_run, tmp_path, capsys):
    original = (batch_run / "report.html").read_text()
    (batch_run / "report.html").unlink()
    assert main(["report", str(batch_run)]) == 0
    assert capsys.readouterr().out.strip() == str(batch_run / "report.html")
    assert (batch_run / "report.html").read_text() == original
    assert main(["report", str(batch_run), "--out", str(tmp_path / "copy.html"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"report": str(tmp_path / "copy.html")}
    assert (tmp_path / "copy.html").read_text() == original


def test_smtverify_report_rejects_what_is_no_run_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing, field 'RUN_DIR': is not a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert "holds no summary.json" in err and json.loads(out)["exit_status"] == 2
    (tmp_path / "summary.json").write_text("[1, 2")
    assert main(["report", str(tmp_path)]) == 2
    assert "cannot be read as JSON" in capsys.readouterr().err


def test_the_command_line_does_not_import_matplotlib():
    """Only drawing a report's plots pays for it."""
    code = "import sys, smtverify.cli, smtverify.report; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@needs_shared
def test_a_bench_report_puts_a_wrong_answer_first_and_draws_the_cactus_plot(tmp_path, capsys):
    """The smoke suite with one expected verdict flipped: a wrong answer, in red, at the top."""
    smoke = SHARED / "smoke"
    rows = (smoke / "instances.csv").read_text().splitlines()
    flipped = [row if "test_sat" not in row else row.replace(",sat", ",unsat") for row in rows[1:]]
    csv = tmp_path / "instances.csv"
    csv.write_text("\n".join([rows[0]] + [",".join(str(smoke / c) if i < 2 else c for i, c in enumerate(r.split(",")))
                                         for r in flipped]) + "\n")
    assert main(["bench", str(csv), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    page = (tmp_path / "run" / "report.html").read_text()
    assert '<div class="banner unsafe" id="verdict"><div class="verdict">1 WRONG</div>' in page
    first_row = page.split("<h2>Instances</h2>")[1].split("<tbody><tr>")[1]
    assert "test_sat.onnx" in first_row and "WRONG" in first_row and "counterexample" in first_row
    assert all(f"{name}.vnnlib" in page for name in ("test_nano", "test_tiny", "test_small", "test_prop"))
    images = inline_pngs(page)
    assert len(images) == (1 if plots.available() else 0)

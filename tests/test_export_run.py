"""smtverify export: a run folder's counterexamples as npz, PNG, the competition's text and a JSON
manifest, each example re-run by onnxruntime first; what an export writes reads back as the very
examples the run found, and an example that is no longer adversarial never gets out."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from smtverify import resources
from smtverify.cli import main
from smtverify.confirm import Counterexample, write_vnncomp_result
from smtverify.export_run import read_vnncomp_counterexample
from smtverify.inputs import read_image_folder
from smtverify.onnx_import import load_onnx
from smtverify.png import save_png
from smtverify.reference import OnnxRuntimeExecutor


def _run(argv: list[str], capsys) -> tuple[int, dict]:
    """A command with --json: its exit status and its one JSON object."""
    capsys.readouterr()         # what a fixture's run printed is not this command's
    status = main(argv + ["--json"])
    out = capsys.readouterr().out
    return status, json.loads(out) if out.strip() else {}


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory) -> Path:
    """digits_mlp certified at eps 0.05 on 20 images: a few falsified items, each an example file
    off the 8-bit lattice (a PGD or solver point)."""
    folder = tmp_path_factory.mktemp("export") / "batch"
    assert main(["batch", "digits_mlp", "--eps", "0.05", "--limit", "20", "--item-timeout", "10",
                 "--out", str(folder), "--quiet"]) == 0
    assert any((folder / "examples").glob("*.npz"))
    return folder


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """mnist_cnn searched around a bundled digit read from a PNG: grid points on the 8-bit lattice,
    so every example is exact as a PNG."""
    base = tmp_path_factory.mktemp("export")
    images = resources.test_images("mnist_cnn")
    save_png(images.images[0], base / "digit.png")
    folder = base / "search"
    assert main(["search", "mnist_cnn", "--input", str(base / "digit.png"), "--label", str(int(images.labels[0])),
                 "--span", "0.25", "--steps", "2", "--features", "8", "--heuristic", "gradient", "--rounds", "4",
                 "--all", "--max-files", "12", "--out", str(folder), "--quiet"]) == 0
    assert len(list(folder.glob("example_[0-9]*.npz"))) == 12
    return folder


def _model(folder: Path) -> str:
    name = "digits_mlp" if folder.name == "batch" else "mnist_cnn"
    return str(resources.model_path(name))


@pytest.mark.parametrize("which", ["batch_run", "search_run"])
def test_npz_holds_each_example_exactly_and_onnxruntime_finds_it_adversarial(which, request, tmp_path, capsys):
    folder = request.getfixturevalue(which)
    status, record = _run(["export", str(folder), "--format", "npz", "--to", str(tmp_path / "cex.npz")], capsys)
    assert status == 0 and record["left_out"] == [] and record["exported"] == record["found"] > 0
    network = load_onnx(_model(folder))
    with np.load(tmp_path / "cex.npz", allow_pickle=False) as data:
        x, y_true, y_adv = data["x"], data["y_true"], data["y_adv"]
        assert x.dtype == np.float32 and x.shape == (record["exported"],) + network.input_shape
        assert y_true.dtype == np.int64 and y_adv.dtype == np.int64
        assert np.array_equal(data["delta"], x - data["originals"])
        for i, source in enumerate(data["source"]):
            with np.load(folder / str(source), allow_pickle=False) as example:
                assert np.array_equal(x[i], example["input"]) and np.array_equal(data["originals"][i], example["original"])
                assert y_true[i] == example["original_class"] and y_adv[i] == example["new_class"]
                changed = example["changed_dims"]
                assert np.array_equal(data["dims"][i][:len(changed)], changed) and np.all(data["dims"][i][len(changed):] == -1)
                assert data["l0"][i] == np.count_nonzero(x[i] != data["originals"][i])
    classes = OnnxRuntimeExecutor(network).classify(x)
    assert np.array_equal(classes, y_adv) and np.all(y_adv != y_true)
    status, evaluated = _run(["eval", _model(folder), str(tmp_path / "cex.npz")], capsys)   # reads x and y
    assert status == 0 and evaluated["classes"] == y_adv.tolist() and evaluated["accuracy"] == 0.0


def test_png_export_reads_back_as_the_same_tensors_with_labels_batch_takes(search_run, tmp_path, capsys):
    assert _run(["export", str(search_run), "--format", "npz", "--to", str(tmp_path / "cex.npz")], capsys)[0] == 0
    status, record = _run(["export", str(search_run), "--format", "png", "--to", str(tmp_path / "png")], capsys)
    assert status == 0 and record["skipped"] == [] and record["exported"] == 12
    network = load_onnx(_model(search_run))
    inputs, labels = read_image_folder(tmp_path / "png", network)
    with np.load(tmp_path / "cex.npz", allow_pickle=False) as data:
        assert np.array_equal(inputs, data["x"]) and np.array_equal(labels, data["y_true"])
        first = tmp_path / "png" / (Path(str(data["source"][0])).stem + ".png")
        status, evaluated = _run(["eval", _model(search_run), str(first)], capsys)
        assert status == 0 and evaluated["class"] == int(data["y_adv"][0])
    # batch re-checks them with their correct labels: every one is misclassified
    status, batch = _run(["batch", _model(search_run), "--images", str(tmp_path / "png"), "--eps", "0",
                          "--out", str(tmp_path / "again"), "--quiet"], capsys)
    assert status == 0 and batch["per_eps"][0]["misclassified"] == 12


def test_examples_off_the_8_bit_lattice_are_never_written_as_png(batch_run, tmp_path, capsys):
    exact = [bool(np.load(f)["png_exact"]) for f in (batch_run / "examples").glob("*.npz")]
    status, record = _run(["export", str(batch_run), "--format", "png", "--to", str(tmp_path / "png")], capsys)
    if any(exact):
        assert status == 0 and len(record["skipped"]) == exact.count(False)
    else:
        assert status == 2 and "8-bit lattice" in record["error"]
    written = list((tmp_path / "png").glob("*.png")) if (tmp_path / "png").is_dir() else []
    assert len(written) == exact.count(True)


@pytest.mark.parametrize("which", ["batch_run", "search_run"])
def test_vnncomp_files_parse_back_to_the_inputs_and_logits(which, request, tmp_path, capsys):
    folder = request.getfixturevalue(which)
    status, record = _run(["export", str(folder), "--format", "vnncomp", "--to", str(tmp_path / "v")], capsys)
    assert status == 0 and len(record["files"]) == record["exported"]
    for source in sorted((folder / "examples").glob("*.npz")) or sorted(folder.glob("example_[0-9]*.npz")):
        verdict, x, y = read_vnncomp_counterexample(tmp_path / "v" / (source.stem + ".counterexample"))
        with np.load(source) as example:
            assert verdict == "sat" and np.array_equal(x, example["input"].reshape(-1))
            assert np.array_equal(y, example["logits"].astype(np.float32))


def test_json_manifest_names_the_model_by_its_sha256_and_every_example(search_run, tmp_path, capsys):
    status, record = _run(["export", str(search_run), "--format", "json", "--to", str(tmp_path / "m.json")], capsys)
    assert status == 0
    manifest = json.loads((tmp_path / "m.json").read_text())
    model = Path(_model(search_run))
    assert manifest["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest() and manifest["model_sha256_recorded"]
    region = manifest["region"]
    assert region["kind"] == "dlv_grid" and region["steps"] == 2 and region["family"] == "pixel"
    assert region["input_sha256"] and region["span"] == 0.25
    assert manifest["verdict"] == "UNSAFE" and manifest["guarantee"] and manifest["versions"]["export"]["onnxruntime"]
    assert manifest["counts"] == {"found": 12, "exported": 12, "left_out": 0}
    assert all(e["png_exact"] and e["y_adv"] != e["y_true"] and e["l0"] > 0 for e in manifest["examples"])


def test_an_example_no_longer_adversarial_is_left_out_and_named(search_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(search_run, folder)
    tampered = folder / "example_0003.npz"
    with np.load(tampered) as data:
        fields = dict(data)
    fields["input"] = fields["original"].copy()         # the original: classified correctly
    np.savez(tampered, **fields)
    status, record = _run(["export", str(folder), "--format", "npz", "--to", str(tmp_path / "cex.npz")], capsys)
    assert status == 0 and record["exported"] == 11
    assert [item["file"] for item in record["left_out"]] == ["example_0003.npz"]
    with np.load(tmp_path / "cex.npz", allow_pickle=False) as data:
        assert "example_0003.npz" not in set(data["source"]) and len(data["x"]) == 11
    main(["export", str(folder), "--format", "npz", "--to", str(tmp_path / "again.npz")])
    assert "example_0003.npz" in capsys.readouterr().out        # said in the text too


def test_a_changed_model_is_refused_naming_the_file(search_run, tmp_path, capsys):
    folder = tmp_path / "run"
    shutil.copytree(search_run, folder)
    changed = tmp_path / "model.onnx"
    changed.write_bytes(Path(_model(search_run)).read_bytes() + b"\0")
    manifest = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**manifest, "model": str(changed)}))
    status, record = _run(["export", str(folder), "--format", "json"], capsys)
    assert status == 2 and str(changed) in record["error"] and "changed" in record["error"]
    assert not (folder / "export" / "manifest.json").exists()


def test_a_folder_without_run_json_is_exported_with_the_model_given(search_run, tmp_path, capsys):
    """A search folder written before run folders had a manifest: its model must be named."""
    folder = tmp_path / "old"
    shutil.copytree(search_run, folder)
    (folder / "run.json").unlink()
    (folder / "summary.json").unlink()
    status, record = _run(["export", str(folder), "--format", "json"], capsys)
    assert status == 2 and "--model" in record["error"]
    status, record = _run(["export", str(folder), "--format", "json", "--model", "mnist_cnn"], capsys)
    assert status == 0 and record["exported"] == 12
    manifest = json.loads((folder / "export" / "manifest.json").read_text())
    assert manifest["model_sha256_recorded"] is False and manifest["model_sha256"] == record["model_sha256"]


def test_bad_input_exits_2_with_one_line(search_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, words in ((["export", str(tmp_path / "nowhere"), "--format", "npz"], "no such run folder"),
                        (["export", str(tmp_path / "empty"), "--format", "npz"], "not a run folder")):
        status, record = _run(argv, capsys)
        assert status == 2 and words in record["error"]
    with pytest.raises(SystemExit) as stopped:
        main(["export", str(search_run), "--format", "tiff"])
    assert stopped.value.code == 2 and "invalid choice" in capsys.readouterr().err
    target = tmp_path / "cex.npz"
    assert _run(["export", str(search_run), "--format", "npz", "--to", str(target)], capsys)[0] == 0
    status, record = _run(["export", str(search_run), "--format", "npz", "--to", str(target)], capsys)
    assert status == 2 and "--force" in record["error"]
    assert _run(["export", str(search_run), "--format", "npz", "--to", str(target), "--force"], capsys)[0] == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_a_bench_folder_collects_its_reconfirmed_counterexamples(tmp_path, capsys):
    """A bench folder (journal kind "instance" naming its network, property and counterexample):
    vnncomp copies those onnxruntime confirms against their property; npz is refused."""
    network = load_onnx(str(resources.model_path("digits_mlp")))
    images = resources.test_images("digits_mlp")
    x, label = images.images[0].reshape(-1), int(images.labels[0])
    logits = OnnxRuntimeExecutor(network).logits(x.reshape(network.input_shape)[None])[0]
    other = int(np.argsort(logits)[-2])
    lines = [f"(declare-const X_{i} Real)" for i in range(64)] + [f"(declare-const Y_{j} Real)" for j in range(10)]
    lines += [f"(assert (>= X_{i} {v!r}))\n(assert (<= X_{i} {v!r}))" for i, v in enumerate(map(float, x))]
    lines.append(f"(assert (>= Y_{label} Y_{other}))")       # sat: the true class does score higher
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "prop.vnnlib").write_text("\n".join(lines) + "\n")
    cex = Counterexample(x.reshape(network.input_shape), logits, logits)
    write_vnncomp_result(folder / "r.0001.counterexample", "sat", cex)
    write_vnncomp_result(folder / "r.0002.counterexample", "sat", Counterexample(x * 0 + 2, logits, logits))
    (folder / "run.json").write_text(json.dumps({"command": "bench"}))
    (folder / "journal.jsonl").write_text("".join(json.dumps(
        {"kind": "instance", "onnx": network.path, "vnnlib": "prop.vnnlib", "counterexample": name}) + "\n"
        for name in ("r.0001.counterexample", "r.0002.counterexample")))
    status, record = _run(["export", str(folder), "--format", "vnncomp"], capsys)
    assert status == 0 and record["exported"] == 1 and record["left_out"][0]["file"] == "r.0002.counterexample"
    copied = folder / "export" / "vnncomp" / "r.0001.counterexample"
    assert copied.read_text() == (folder / "r.0001.counterexample").read_text()
    status, record = _run(["export", str(folder), "--format", "npz"], capsys)
    assert status == 2 and "no images" in record["error"]

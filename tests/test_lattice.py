"""Pixel grids on the input's 8-bit lattice: every grid value is exactly k/255 in the domain, so an
8-bit PNG stores every example exactly (issue 21, item 1)."""
import numpy as np
import pytest

from smtverify import resources
from smtverify.errors import SmtVerifyError
from smtverify.lattice import index_range, lattice_indices, lattice_values, resolve, snap_span
from smtverify.manipulations import PixelManipulation
from smtverify.onnx_import import load_onnx
from smtverify.search import SearchSettings, dlv_search, minimal_search


def eight_bit(shape=(1, 6, 6), seed=0):
    k = np.random.default_rng(seed).integers(0, 256, size=shape)
    return lattice_values(k, 255), k


def test_detects_the_8_bit_lattice_and_nothing_else():
    x, k = eight_bit()
    assert np.array_equal(lattice_indices(x, 255), k)
    assert lattice_indices(x + np.float32(1e-4), 255) is None
    assert lattice_indices(np.float32([0.5]), 255) is None
    assert resolve(None, x, 0.1).levels == 255
    assert resolve(None, np.float32([0.5]), 0.1).levels is None
    assert resolve(0, x, 0.1).levels is None


def test_reading_a_png_gives_lattice_values():
    """What inputs.read_array computes for a PNG (uint8 / 255 in float32) is the lattice value."""
    k = np.arange(256)
    assert np.array_equal(k.astype(np.uint8).astype(np.float32) / 255.0, lattice_values(k, 255))


def test_span_is_rounded_to_a_positive_multiple_and_says_so():
    grid = snap_span(0.25, 255)
    assert grid.span == 64 / 255 and "64/255" in grid.note
    assert snap_span(0.0001, 255).span == 1 / 255
    assert snap_span(10 / 255, 255).note == ""


def test_explicit_levels_need_an_input_on_them():
    with pytest.raises(SmtVerifyError, match="lattice k/16"):
        resolve(16, np.float32([0.3]), 0.1)
    assert resolve(16, np.float32([3 / 16]), 0.1).span == 2 / 16


@pytest.mark.parametrize("domain", [(0.0, 1.0), (0.1, 0.9)])
def test_every_pixel_grid_value_is_on_the_lattice_within_the_domain(domain):
    x, _ = eight_bit((1, 5, 5), seed=1)
    x = np.clip(x, *[lattice_values(k, 255) for k in index_range(domain, 255)])
    manipulation = PixelManipulation(x, [0, 7, 24], snap_span(0.3, 255).span, 3, domain, lattice=255)
    values = manipulation.value_table
    assert lattice_indices(values, 255) is not None
    assert values.min() >= domain[0] and values.max() <= domain[1]
    every_point = np.array(np.meshgrid(*manipulation.levels)).reshape(3, -1).T
    assert lattice_indices(manipulation.apply(every_point), 255) is not None


def test_a_lattice_grid_rejects_a_span_off_it():
    x, _ = eight_bit()
    with pytest.raises(ValueError, match="multiple of 1/255"):
        PixelManipulation(x, [0], 0.1, 2, lattice=255)


def mnist():
    data = resources.test_images("mnist_cnn")
    return load_onnx(resources.model_path("mnist_cnn")), data.images[0], int(data.labels[0])


def test_search_reports_the_grid_it_used():
    network, x, label = mnist()
    settings = SearchSettings(span=0.05, steps=1, features=3, timeout=30)
    report = dlv_search(network, x, label, settings)
    summary = report.summary()
    assert summary["levels"] == 255 and summary["span_used"] == 13 / 255 and "13/255" in summary["grid_note"]
    assert report.verdict.value == "SAFE_ON_GRID" and "span 0.0509804" in report.guarantee
    off = dlv_search(network, x, label, SearchSettings(span=0.05, steps=1, features=3, timeout=30, levels=0))
    assert off.summary()["levels"] is None and off.summary()["span_used"] == 0.05


def test_minimal_search_rounds_its_ladder_onto_the_lattice():
    network, x, label = mnist()
    report = minimal_search(network, x, [100, 200], [0.001, 0.002, 0.05], 1, label, SearchSettings(timeout=30))
    assert report.spans == [1 / 255, 13 / 255] and report.levels == 255 and "13/255" in report.grid_note


def test_negative_levels_are_refused_by_name():
    network, x, label = mnist()
    with pytest.raises(SmtVerifyError, match="levels must be 0") as error:
        dlv_search(network, x, label, SearchSettings(levels=-1))
    assert error.value.field == "levels"

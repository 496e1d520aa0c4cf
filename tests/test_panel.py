"""Panels for people: original, adversarial and difference, enlarged and labelled (issue 21, item 1)."""
import numpy as np
import pytest
from PIL import Image

from smtverify import resources
from smtverify.export import ExampleWriter
from smtverify.grid import Example
from smtverify.onnx_import import load_onnx
from smtverify.panel import LINE, MARGIN, TEXT_LINES_ABOVE, TEXT_LINES_BELOW, TILE, save_panel
from smtverify.search import SearchSettings, dlv_search


def expected_size(height: int, width: int) -> tuple[int, int]:
    scale = TILE // max(height, width)
    return (3 * width * scale + 4 * MARGIN,
            height * scale + 2 * MARGIN + (TEXT_LINES_ABOVE + TEXT_LINES_BELOW) * LINE)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (28, 28)])
def test_panel_is_enlarged_and_decodes(tmp_path, shape):
    original = np.random.default_rng(0).random(shape).astype(np.float32)
    moved = original.copy()
    moved.reshape(-1)[:3] = 1 - moved.reshape(-1)[:3]
    logits = np.arange(10, dtype=np.float32)
    path = save_panel(tmp_path / "p.png", original, Example.of(moved, original, np.zeros(0), 3, logits),
                      original_logits=logits[::-1])
    with Image.open(path) as panel:
        panel.load()
        assert panel.size == expected_size(*shape[-2:]) and panel.mode == "RGB"
        assert panel.size[0] >= 3 * TILE


def test_nearest_neighbour_keeps_each_pixel_a_square(tmp_path):
    original = np.zeros((1, 8, 8), np.float32)
    moved = original.copy()
    moved[0, 2, 5] = 1.0
    path = save_panel(tmp_path / "p.png", original, Example.of(moved, original, np.zeros(0), 0, np.eye(10)[1]))
    scale = TILE // 8
    left, top = 2 * MARGIN + 8 * scale, MARGIN + TEXT_LINES_ABOVE * LINE      # the adversarial tile
    pixels = np.asarray(Image.open(path))[top:top + 8 * scale, left:left + 8 * scale]
    square = pixels[2 * scale:3 * scale, 5 * scale:6 * scale]
    assert np.all(square == 255) and np.all(np.delete(pixels.reshape(8, scale, 8, scale, 3), 2, 0) == 0)


def test_writer_adds_a_panel_per_image_example_only_when_asked(tmp_path):
    data = resources.test_images("digits_cnn")
    network = load_onnx(resources.model_path("digits_cnn"))
    x, label = data.images[0], int(data.labels[0])
    settings = SearchSettings(span=0.3, steps=2, features=4, heuristic="gradient", rounds=3, timeout=30)
    for panels, folder in ((True, tmp_path / "with"), (False, tmp_path / "without")):
        with ExampleWriter(folder, x, panels=panels, original_logits=network.logits(x)[0]) as writer:
            report = dlv_search(network, x, label, settings, on_found=writer.write)
        assert report.examples
        assert len(list(folder.glob("*.panel.png"))) == (len(report.examples) if panels else 0)
    with Image.open(tmp_path / "with" / "example_0000.panel.png") as panel:
        assert panel.size == expected_size(8, 8)

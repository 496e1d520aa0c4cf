"""The progress display: shown at a terminal only, and saying the phase, what is open and proven."""
from __future__ import annotations

import io

from smtverify.progress_display import certification_progress, describe, wanted
from smtverify.verify.progress import Snapshot


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_at_a_terminal_and_never_when_quiet():
    assert wanted(False, Terminal())
    assert not wanted(True, Terminal())
    assert not wanted(False, io.StringIO())


def test_a_snapshot_reads_as_one_line():
    snapshot = Snapshot("input splitting", 2, 3, 4.0, 60.0, 17, 120, 0.4321)
    assert describe(snapshot) == "case 2/3, input splitting, 120 open, 17 closed, 43.2% proven"
    assert describe(Snapshot("root bounds", 1, 1, 0.1, 60.0, 0)) == "root bounds, 0 closed"


def test_the_bar_draws_on_its_stream_and_closes():
    stream = Terminal()
    with certification_progress(True, stream) as listener:
        listener(Snapshot("falsification", 1, 1, 0.5, 10.0, 0))
        listener(Snapshot("input splitting", 1, 1, 2.5, 10.0, 3, 7, 0.25))
    drawn = stream.getvalue()
    assert "certifying" in drawn and "input splitting, 7 open, 3 closed, 25.0% proven" in drawn
    with certification_progress(False, stream) as listener:
        assert listener is None


def test_the_search_bar_follows_each_rounds_grid_and_the_examples():
    from smtverify.progress_display import search_progress

    stream = Terminal()
    with search_progress(True, stream, interval=0) as listener:
        listener(1, 500, 1000, 0)
        listener(1, 1000, 1000, 2)
        listener(2, 300, 4000, 3)
    drawn = stream.getvalue()
    assert "round 1" in drawn and "round 2" in drawn and "3 examples" in drawn and "4.00k" in drawn
    with search_progress(False, stream) as listener:
        assert listener is None


def test_a_search_reports_every_chunk_of_every_round(tmp_path):
    """dlv_search's listener hears each round's grid grow to its size; the report is the same."""
    from smtverify import resources
    from smtverify.onnx_import import load_onnx
    from smtverify.search import SearchSettings, dlv_search

    network = load_onnx(resources.model_path("digits_mlp"))
    images = resources.test_images("digits_mlp")
    settings = SearchSettings(span=0.25, steps=2, features=3, rounds=2, timeout=60)
    heard: list[tuple[int, int, int, int]] = []
    report = dlv_search(network, images.images[0], int(images.labels[0]), settings, on_progress=lambda *a: heard.append(a))
    quiet = dlv_search(network, images.images[0], int(images.labels[0]), settings)
    assert report.verdict is quiet.verdict and report.points_evaluated == quiet.points_evaluated
    rounds = sorted({r for r, _, _, _ in heard})
    assert rounds and rounds[0] == 1
    for r in rounds:
        mine = [(done, total) for rr, done, total, _ in heard if rr == r]
        assert all(a[0] <= b[0] for a, b in zip(mine, mine[1:])) and all(done <= total for done, total in mine)

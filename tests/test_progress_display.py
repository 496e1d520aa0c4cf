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

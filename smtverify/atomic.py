"""Files written whole: a kill, a full disk or a folder without permission never leaves half a file
under the final name, nor a stray partial one beside it."""
from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path
from typing import Callable


def write_whole(path: Path, write: Callable[[Path], None]) -> Path:
    """`write` fills a partial file beside `path` (same suffix, so writers that add one, like
    numpy's savez, keep its name), which then replaces `path` in one step; on any failure or
    interrupt the partial file is removed and the error goes on."""
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException:
        with suppress(OSError):
            partial.unlink()
        raise
    return path

"""The S-expression layer of the VNN-LIB reader: tokens, parentheses and line numbers.

Kept apart from vnnlib.py, which gives the forms their meaning. Parsing is iterative and nesting is
bounded, so no input can exhaust the recursion of the reader built on it; the text is tokenized a
chunk of lines at a time, so a mistake near the top of a huge file is reported at once.
"""
from __future__ import annotations

import re
from typing import Callable, Iterator, NoReturn

MAX_NESTING = 100               # forms deeper than this would exhaust Python's recursion limit
_COMMENT = re.compile(r";[^\n]*")
_TOKEN = re.compile(r"\n|[()]|[^\s();]+")

Fail = Callable[..., NoReturn]  # fail(message, line) raises the caller's own error


class Form(list):
    """A parenthesised S-expression that remembers the line it opens on, for error messages."""

    __slots__ = ("line",)


def chunks(text: str, size: int = 1 << 20) -> Iterator[str]:
    """The text in pieces of about `size` characters, each ending at a line end so that a comment
    never straddles two."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def parse(text: str, fail: Fail) -> list:
    """The top-level S-expressions; atoms are strings, lists are `Form`s."""
    root: list = []
    top, enclosing = root, []
    line = 1
    for token in (token for chunk in chunks(text) for token in _TOKEN.findall(_COMMENT.sub("", chunk))):
        if token == "(":
            if len(enclosing) >= MAX_NESTING:
                fail(f"forms nested more than {MAX_NESTING} deep are not supported", line)
            form = Form()
            form.line = line
            top.append(form)
            enclosing.append(top)
            top = form
        elif token == ")":
            if not enclosing:
                fail("unbalanced parentheses: ')' closes nothing", line)
            top = enclosing.pop()
        elif token == "\n":
            line += 1
        elif top is root:
            fail(f"'{token}' outside parentheses: expected a command such as (assert ...)", line)
        else:
            top.append(token)
    if enclosing:
        fail("unbalanced parentheses: the form opened here is never closed",
             (enclosing[1] if len(enclosing) > 1 else top).line)
    return root

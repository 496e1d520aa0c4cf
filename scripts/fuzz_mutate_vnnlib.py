"""Token-level mutations of VNN-LIB text: delete, duplicate or swap tokens, odd numbers and
variable names, unbalanced or deeply nested parentheses, truncation, stray bytes.

Why tokens rather than bytes: the reader's checks are about S-expressions, numbers and names, and a
random byte mostly lands in a comment or breaks the first token it touches.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable

TOKEN = re.compile(r";[^\n]*|\s+|[()]|[^\s();]+")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
VARIABLE = re.compile(r"[XY]_\d+")
ODD_NUMBERS = ["1e400", "-1e400", "1e-400", "1e999999999", "-1e-999999999", "1e308", "-1.8e308",
               "4.9e-324", "0", "-0", "-0.0e-0", "9" * 400, "0." + "0" * 500 + "1", "1" * 5000, "1." + "0" * 3000 + "1",
               "nan", "NaN", "inf", "-inf", "+inf", "1e", "1e+", "e5", ".e1", "1.2.3", "--1", "+-1",
               ".", "-", "+", "0x1A", "1_0", "\u0661", "1\u0663", "00001", "+.5", "5.", str(2 ** 70)]
ODD_VARIABLES = ["X_99999999999999999999", "X_1000000", "X_01", "X_-1", "x_0", "X0", "X_", "_0",
                 "Y_1000000", "Z_0", "X_1\u0663", "X_\u0661"]
KEYWORDS = ["(", ")", "assert", "declare-const", "Real", "Int", "and", "or", "not", "=>", "<=", ">=",
            "<", ">", "=", "+", "-", "*", "/", "check-sat", "set-logic", "ite", "let"]


def tokenize(text: str) -> list[str]:
    """All tokens, whitespace and comments included, so that joining them gives the text back."""
    return TOKEN.findall(text)


def is_significant(token: str) -> bool:
    return bool(token) and not token.isspace() and not token.startswith(";")


def pick(tokens: list[str], rng: random.Random, wanted: Callable[[str], bool] = is_significant) -> int:
    """A random position holding a wanted token, else any significant one, else any. By sampling:
    scanning the 100 000 tokens of a CIFAR property for every edit would dominate the run."""
    for test in (wanted, is_significant):
        for _ in range(200):
            spot = rng.randrange(len(tokens))
            if test(tokens[spot]):
                return spot
    return rng.randrange(len(tokens))


def delete_tokens(tokens: list[str], rng: random.Random) -> str:
    start = pick(tokens, rng)
    count = rng.choice([1, 1, 2, 3, 10])
    del tokens[start:start + count]
    return f"deleted {count} token(s) at {start}"


def duplicate_token(tokens: list[str], rng: random.Random) -> str:
    spot = pick(tokens, rng)
    tokens.insert(spot, tokens[spot] + " ")
    return f"duplicated token {tokens[spot]!r}"


def swap_tokens(tokens: list[str], rng: random.Random) -> str:
    first, second = pick(tokens, rng), pick(tokens, rng)
    tokens[first], tokens[second] = tokens[second], tokens[first]
    return f"swapped tokens {first} and {second}"


def replace_number(tokens: list[str], rng: random.Random) -> str:
    spot = pick(tokens, rng, NUMBER.fullmatch)
    new = rng.choice(ODD_NUMBERS)
    tokens[spot] = new
    return f"number -> {new[:20]!r}"


def replace_variable(tokens: list[str], rng: random.Random) -> str:
    """Another index, kind or spelling for one occurrence of a variable."""
    spot = pick(tokens, rng, VARIABLE.fullmatch)
    old = tokens[spot]
    index = int(old[2:]) if VARIABLE.fullmatch(old) else 0
    tokens[spot] = rng.choice(ODD_VARIABLES + [f"X_{index + 1}", f"Y_{index}", f"X_{max(index - 1, 0)}",
                                               f"Y_{index + 1}"])
    return f"variable {old!r} -> {tokens[spot]!r}"


def replace_keyword(tokens: list[str], rng: random.Random) -> str:
    spot = pick(tokens, rng)
    old, tokens[spot] = tokens[spot], rng.choice(KEYWORDS)
    return f"token {old[:20]!r} -> {tokens[spot]!r}"


def unbalance(tokens: list[str], rng: random.Random) -> str:
    if rng.random() < 0.5:
        spot = pick(tokens, rng, lambda token: token in ("(", ")"))
        return f"token {tokens.pop(spot)!r} at {spot} deleted"
    spot = rng.randrange(len(tokens) + 1)
    paren = rng.choice(["(", ")", "((", "))"])
    tokens.insert(spot, paren)
    return f"{paren!r} inserted at {spot}"


def form_end(tokens: list[str], start: int) -> int:
    """The position of the ')' closing the '(' at start (or the last token if it is never closed)."""
    end, level = start, 0
    for end in range(start, len(tokens)):
        level += {"(": 1, ")": -1}.get(tokens[end], 0)
        if level == 0:
            break
    return end


def nest_deeply(tokens: list[str], rng: random.Random) -> str:
    """Wrap a form in thousands of (and ...), (or ...), (- ...) or (+ ...), or open that many."""
    depth = rng.choice([100, 1000, 10_000, 100_000])
    head = rng.choice(["and", "or", "-", "+", "assert"])
    start = pick(tokens, rng, lambda token: token == "(")
    if tokens[start] != "(" or rng.random() < 0.2:
        tokens.insert(rng.randrange(len(tokens) + 1), "(" * depth)
        return f"{depth} unclosed '('"
    end = form_end(tokens, start)
    tokens.insert(end + 1, ")" * depth)
    tokens.insert(start, f"({head} " * depth)
    return f"a form wrapped in {depth} ({head} ...)"


def repeat_form(tokens: list[str], rng: random.Random) -> str:
    """A form (an assert, a disjunction, a term) repeated up to a thousand times, where it stands:
    asserts of disjunctions multiply out in DNF. At most 10^5 tokens are added, so that building
    the input does not take longer than reading it."""
    start = pick(tokens, rng, lambda token: token == "(")
    end = form_end(tokens, start)
    times = min(rng.choice([2, 10, 30, 1000]), max(1, 100_000 // (end + 1 - start)))
    tokens[end + 1:end + 1] = [" "] + tokens[start:end + 1] * times
    return f"form at {start} repeated {times} times"


def truncate(tokens: list[str], rng: random.Random) -> str:
    spot = rng.randrange(len(tokens) + 1)
    del tokens[spot:]
    if tokens and rng.random() < 0.5:
        tokens[-1] = tokens[-1][: rng.randrange(len(tokens[-1]) + 1)]
    return f"truncated at token {spot}"


def stray_characters(tokens: list[str], rng: random.Random) -> str:
    """NUL, non-ASCII or non-UTF-8 characters inside or between tokens (bad UTF-8 as surrogates,
    written back as the raw bytes)."""
    spot = rng.randrange(len(tokens))
    stray = rng.choice(["\x00", "\udcff", "\u00e9", "\u200b", "\ufeff", "\r", "\t", "\x0b", "|", "\"", "#"])
    cut = rng.randrange(len(tokens[spot]) + 1)
    tokens[spot] = tokens[spot][:cut] + stray + tokens[spot][cut:]
    return f"stray {stray!r} in token {spot}"


# Value-level edits weigh more: an edit that unbalances the parentheses stops the reader at once,
# so a trial with one says nothing about the checks behind the parser.
MUTATORS: list[Callable[[list[str], random.Random], str]] = [
    *[replace_number] * 4, *[replace_variable] * 3, *[replace_keyword] * 2, swap_tokens,
    duplicate_token, delete_tokens, repeat_form, stray_characters, unbalance, nest_deeply, truncate]


def mutate_vnnlib(tokens: list[str], rng: random.Random) -> tuple[bytes, str]:
    """A mutated copy of a tokenized file, as the bytes to write: 1-3 token-level edits."""
    tokens = list(tokens)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if not tokens:
            break
        done.append(rng.choice(MUTATORS)(tokens, rng))
    return "".join(tokens).encode("utf-8", "surrogateescape"), "; ".join(done) or "unchanged"

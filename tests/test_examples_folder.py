"""The scripts in examples/: each runs on the bundled data and prints what it claims, they import
only public names, and the README's Python API snippets are taken from them (so the two cannot
drift apart). (tests/test_examples.py is about the bundled models themselves.)"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# What each script's output must contain: regular expressions, each matched against one line.
EXPECTED_LINES = {
    "certify_one_decision.py": [r"^eps 0\.01: SAFE in ", r"^  guarantee: complete on the continuous region",
                                r"^eps 0\.2: UNSAFE in ", r"^  class 0 became [1-9]$"],
    "search_adversarial.py": [r"^grid: UNSAFE, (\d+) of \1 points, [1-9]\d* examples$", r"^rounds: UNSAFE \[\(\d+, \d+\)",
                              r"^minimal: span 0\.2, 2 pixels \(at span 0\.4\)$"],
    "export_counterexamples.py": [r"^verdict: UNSAFE, 1 examples written to adversarial$",
                                  r"^example_0000\.npz: class 0 -> [1-9], \d+ pixels changed, L2 \d",
                                  r"^retrain\.npz: 1 inputs labelled \[0\]$"],
    "verify_vnnlib.py": [r"^eps 0\.01: unsat$", r"^  result file: unsat, 1 lines$", r"^eps 0\.3: sat$",
                         r"^  result file: sat, 77 lines$"],          # sat, "(", 64 inputs, 10 outputs, ")"
}


def run_example(name: str, cwd: Path) -> str:
    """The script's stdout, run as a user would, against this checkout's smtverify."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


RUN_ELSEWHERE = {"retrain.py": "tests/test_retrain_example.py"}     # long enough for a test file of its own


def test_every_example_is_run_here():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*EXPECTED_LINES, *RUN_ELSEWHERE])
    assert all((ROOT / test).is_file() for test in RUN_ELSEWHERE.values())


@pytest.mark.parametrize("name", sorted(EXPECTED_LINES))
def test_example_runs_and_prints_its_results(name, tmp_path):
    lines = run_example(name, tmp_path).splitlines()
    for pattern in EXPECTED_LINES[name]:
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)


def test_exported_files_are_written(tmp_path):
    run_example("export_counterexamples.py", tmp_path)
    written = sorted(p.name for p in (tmp_path / "adversarial").iterdir())
    assert written == ["example_0000.npz", "example_0000.png", "original.png", "retrain.npz"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_examples_import_only_public_names(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names = (node.module or "").split(".") + [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [part for alias in node.names for part in alias.name.split(".")]
        else:
            continue
        assert not any(name.startswith("_") for name in names), ast.unparse(node)


def readme_api_snippets() -> list[str]:
    """The Python code blocks of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_readme_has_api_snippets():
    assert len(readme_api_snippets()) >= 4


@pytest.mark.parametrize("snippet", readme_api_snippets(), ids=lambda s: s.splitlines()[0][:40])
def test_readme_snippet_is_taken_from_an_example(snippet):
    """Every paragraph of the snippet (blank-line separated) appears verbatim in one example file,
    in the snippet's order: a snippet may leave parts of its script out, never change them."""
    paragraphs = [p.strip("\n") for p in snippet.split("\n\n") if p.strip()]

    def holds_in_order(source: str) -> bool:
        at = 0
        for paragraph in paragraphs:
            at = source.find(paragraph, at)
            if at < 0:
                return False
            at += len(paragraph)
        return True

    assert any(holds_in_order(path.read_text()) for path in EXAMPLES.glob("*.py")), snippet

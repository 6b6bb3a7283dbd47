"""The README's "In Python" examples run as written, after the `dapo` commands that section says to run first
(in an empty folder, with the repository's configs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dapo.cli import cli_main

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_in_python_examples_run_after_the_commands_before_them(tmp_path, monkeypatch):
    section = _section("In Python")
    (commands,) = _blocks(section, "bash")
    examples = _blocks(section, "python")
    assert len(examples) == 3
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    for line in commands.splitlines():
        args = shlex.split(line)
        assert args[0] == "dapo", line
        cli_main(args[1:])
    for i, example in enumerate(examples):
        exec(compile(example, f"README.md, In Python example {i + 1}", "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "arith" / "actor_hf" / "config.json").is_file()  # the first example's save_hf

"""The README's examples are executable documentation: run every ``$ fieldstream`` line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from gateway.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[list[str]]:
    text = README.read_text()
    blocks = re.findall(r"```console\n(.*?)```", text, flags=re.S)
    return [
        shlex.split(line.removeprefix("$ fieldstream "))
        for block in blocks
        for line in block.splitlines()
        if line.startswith("$ fieldstream ")
    ]


def test_the_readme_has_examples() -> None:
    assert len(_examples()) >= 3


def test_the_readme_names_exactly_two_setup_commands() -> None:
    text = README.read_text()
    setup = text.split("## Set-up: two commands", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make (\w+)", setup, flags=re.M) == ["demo", "test"]


def test_every_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIELDSTREAM_DATA_DIR", raising=False)
    for argv in _examples():
        assert main([*argv, "--format", "json"] if "--format" not in argv else argv) == 0, argv

"""The command line's shape: shared options, and every documented command parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from monosemantic.cli import build_parser, main
from monosemantic.commands import bilinear, zoo

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


COMMAND = re.compile(r"^(?:nice -n \d+ )?(monosemantic [a-z-]+ (?:.*\\\n)*.*)", re.M)
"""A command line of ours in a doc, with its backslash continuations."""


def documented_commands() -> dict[str, str]:
    """``monosemantic ...`` commands of the docs by ``file:line``, comments
    dropped; synopses (with ``[...]``) left out."""
    found = {}
    for doc in DOCS:
        text = doc.read_text()
        for match in COMMAND.finditer(text):
            line = match[1].replace("\\\n", " ").split("#")[0]
            number = text.count("\n", 0, match.start()) + 1
            if "[" not in line and "--help" not in line:
                found[f"{doc.name}:{number}"] = line
    return found


DOCUMENTED = documented_commands()


def test_the_docs_show_commands() -> None:
    assert len(DOCUMENTED) >= 10


@pytest.mark.parametrize("line", DOCUMENTED.values(), ids=DOCUMENTED)
def test_documented_command_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])  # a bad line exits with an error
    assert callable(args.func)


@pytest.mark.parametrize(
    ("argv", "func"),
    [
        (["zoo", "train", "mnist"], zoo.cmd_train_mnist),
        (["zoo", "train", "lm"], zoo.cmd_train_lm),
        (["bilinear", "decompose", "mnist"], bilinear.cmd_decompose),
        (["bilinear", "lm-features", "MODEL"], bilinear.cmd_lm_features),
    ],
)
def test_shared_options(argv: list[str], func: object) -> None:
    args = build_parser().parse_args([*argv, "--out", "x", "--threads", "3"])
    assert args.func is func and (args.out, args.threads) == ("x", 3)


def test_negative_threads_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["zoo", "train", "mnist", "--threads", "-1"]) == 2
    assert "threads=-1 is invalid" in capsys.readouterr().err

"""The `holdscan` command line: every option says what it does and its default, and a
setting that cannot work is refused at start in one line."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Iterator

import pytest

from holdscan.cli import parser
from holdscan.lab.cluster import HOLDSCAN


def parsers(p: argparse.ArgumentParser, name: str = "holdscan"
            ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_the_walk_sees_every_subcommand() -> None:
    names = {n for n, _ in parsers(parser())}
    assert {"holdscan dispatch", "holdscan worker", "holdscan quarantine release",
            "holdscan policy explain", "holdscan queue cat", "holdscan demo"} <= names


def test_every_option_has_a_help_with_its_default() -> None:
    problems = []
    for name, p in parsers(parser()):
        formatter = p._get_formatter()
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                problems.append(f"{what}: no help")
                continue
            text = formatter._expand_help(action)
            if "\n" in text.strip():
                problems.append(f"{what}: more than one line")
            if not action.option_strings:
                continue        # a positional argument has no default
            if "(default: " not in text:
                problems.append(f"{what}: does not say its default")
            if action.default not in (None, False, "") and str(action.default) not in text:
                problems.append(f"{what}: default {action.default!r} not in {text!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("address", ["tcp//127.0.0.1:3310", "127.0.0.1:3310",
                                     "unix://run/clamav/clamd.ctl"])
def test_worker_refuses_a_clamd_address_it_cannot_use_at_start(address: str) -> None:
    p = subprocess.run([HOLDSCAN, "worker", "--clamd", address], capture_output=True,
                       text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert address in p.stderr and "tcp://host:port" in p.stderr and "unix:///path" in p.stderr

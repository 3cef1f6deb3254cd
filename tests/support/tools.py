"""Programs the tests need: the README's test command installs every one of them
(scripts/bootstrap.sh), so a missing one is a failed set-up, never a skipped test."""

from __future__ import annotations

import shutil

import pytest


def require(present: bool, what: str, package: str) -> None:
    """Fail, saying how to get it, unless `present`."""
    if not present:
        pytest.fail(f"{what} is not installed: run the README's test command (make test; "
                    f"scripts/bootstrap.sh installs Debian's {package})", pytrace=False)


def require_program(name: str, package: str = "") -> str:
    path = shutil.which(name)
    require(path is not None, name, package or name)
    assert path is not None
    return path

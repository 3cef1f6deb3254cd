"""A dispatcher whose Python the mail owner cannot read.

The dispatcher starts as root and drops to Postfix's mail_owner. If mail_owner
cannot read the Python it runs on, it must say so in one line right after the
drop (which path, for what, what to do), exit 2, and leave every held message
alone; `holdscan check` must report the same as a FAIL line.

Two set-ups that administrators really make, built in seconds without a
download (hard links to the packages this test runs with):

* a venv inside root's home (a 0700 directory): site-packages is unreadable;
* a venv elsewhere, made from an interpreter inside root's home (pyenv's
  way): the standard library is unreadable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from holdscan.lab.cluster import lab_config
from holdscan.lab.postfix import PostfixInstance
from holdscan.privileges import Problem, runtime_problem, verify_as
from tests.support.mail import send, simple_message

pytestmark = pytest.mark.postfix

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
HINT = ("install holdscan in a venv made from /usr/bin/python3 outside root's home "
        "(scripts/bootstrap.sh does), or make that path readable to postfix")
DEAD_BROKER = "redis://127.0.0.1:1/0"     # nothing may be claimed, so nothing is sent


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the dispatcher drops from root to Postfix's mail_owner")


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a tree as hard links (a fraction of a second), or copy it if that fails."""
    dst.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["cp", "-al", f"{src}/.", str(dst)], capture_output=True).returncode:
        subprocess.run(["cp", "-a", f"{src}/.", str(dst)], check=True)


@dataclass
class Venv:
    root: Path              # what to remove afterwards
    venv: Path
    unreadable: Path        # the import path that mail_owner cannot read
    home: Path              # the 0700 directory in its way

    @property
    def holdscan(self) -> str:
        return str(self.venv / "bin" / "holdscan")


def _make_venv(python: str, venv: Path) -> None:
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    # The packages this test runs with (holdscan installed editable among them).
    _link_tree(Path(sysconfig.get_paths()["purelib"]), venv / "lib" / PY / "site-packages")
    script = venv / "bin" / "holdscan"
    script.write_text(f"#!{venv}/bin/python3\nimport sys\nfrom holdscan.cli import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    probe = subprocess.run([str(venv / "bin" / "python3"), "-c", "import holdscan.cli, celery"],
                           capture_output=True, text=True, env=_clean_env())
    assert probe.returncode == 0, probe.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("HOLDSCAN_", "PYTHON", "VIRTUAL_ENV"))}


@pytest.fixture(scope="module")
def venv_in_root_home() -> Iterator[Venv]:
    _need_root()
    if not Path(f"/usr/bin/{PY}").exists():
        pytest.skip(f"needs /usr/bin/{PY}, the interpreter these tests run on")
    home = Path(tempfile.mkdtemp(prefix="holdscan-roothome-"))     # 0700, like /root
    try:
        assert (home.stat().st_mode & 0o777) == 0o700
        _make_venv("/usr/bin/python3", home / "venv")
        yield Venv(home, home / "venv", home / "venv" / "lib" / PY / "site-packages", home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def venv_from_python_in_root_home() -> Iterator[Venv]:
    _need_root()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if not Path(f"/usr/bin/{PY}").exists() or not (stdlib / "os.py").exists():
        pytest.skip(f"needs /usr/bin/{PY} and its standard library")
    home = Path(tempfile.mkdtemp(prefix="holdscan-roothome-"))     # 0700, like /root
    outside = Path(tempfile.mkdtemp(prefix="holdscan-venv-"))
    try:
        outside.chmod(0o755)
        # A private Python under root's home, as pyenv installs one.
        py = home / "pyenv"
        (py / "bin").mkdir(parents=True)
        shutil.copy2(f"/usr/bin/{PY}", py / "bin" / PY)
        _link_tree(stdlib, py / "lib" / PY)
        _make_venv(str(py / "bin" / PY), outside / "venv")
        yield Venv(outside, outside / "venv", py / "lib" / PY, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


@pytest.fixture
def held(postfix: PostfixInstance) -> Path:
    send(postfix.port, "sender@example.test", ["rcpt@example.test"], simple_message(1))
    [path] = postfix.wait_held(1)
    return path


def _dispatch(v: Venv, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([v.holdscan, "dispatch", "--config", str(config), "--once"],
                          capture_output=True, text=True, timeout=120, env=_clean_env(),
                          cwd="/")


@pytest.mark.parametrize("which", ["venv_in_root_home", "venv_from_python_in_root_home"])
def test_dispatcher_says_in_one_line_what_mail_owner_cannot_read(
        which: str, request: pytest.FixtureRequest, postfix: PostfixInstance, held: Path,
        tmp_path: Path) -> None:
    v: Venv = request.getfixturevalue(which)
    before = held.read_bytes()
    st = held.stat()
    config = lab_config(tmp_path / "holdscan.toml", postfix.config_dir, DEAD_BROKER,
                        "unix:/nonexistent")

    p = _dispatch(v, config)

    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith(f"holdscan: Postfix's mail_owner postfix cannot read {v.unreadable} "
                           "(needed for "), line
    assert f"; {v.home} is drwx------ root): " in line, line
    assert line.endswith(f"): {HINT}"), line
    # Nothing was claimed: the message is still in hold, the same file, the same bytes.
    assert postfix.queue_files("hold") == [held]
    assert held.read_bytes() == before
    now = held.stat()
    assert (now.st_ino, now.st_mode, now.st_uid) == (st.st_ino, st.st_mode, st.st_uid)
    assert postfix.queue_files("incoming") == [] and postfix.queue_files("active") == []


@pytest.mark.parametrize("which", ["venv_in_root_home", "venv_from_python_in_root_home"])
def test_check_reports_the_same_as_a_fail_line(which: str, request: pytest.FixtureRequest,
                                               postfix: PostfixInstance,
                                               tmp_path: Path) -> None:
    v: Venv = request.getfixturevalue(which)
    config = lab_config(tmp_path / "holdscan.toml", postfix.config_dir, DEAD_BROKER,
                        "unix:/nonexistent")
    dispatch_line = _dispatch(v, config).stderr.strip()
    p = subprocess.run([v.holdscan, "check", "--config", str(config)], capture_output=True,
                       text=True, timeout=120, env=_clean_env(), cwd="/")
    assert "Traceback" not in p.stdout + p.stderr
    assert p.returncode == 1
    [line] = [x for x in p.stdout.splitlines() if x.startswith("FAIL runtime:")]
    what, fix = dispatch_line.removeprefix("holdscan: ").split("): ", 1)
    assert line == f"FAIL runtime: {what}) — {fix}"


def test_a_readable_venv_passes(postfix: PostfixInstance, tmp_path: Path) -> None:
    """The venv these tests run from is readable by postfix: the check says ok."""
    _need_root()
    if verify_as("postfix") is not None:
        pytest.skip(f"postfix cannot read this test run's Python: {verify_as('postfix')}")
    config = lab_config(tmp_path / "holdscan.toml", postfix.config_dir, DEAD_BROKER,
                        "unix:/nonexistent")
    p = subprocess.run([sys.executable, "-m", "holdscan.cli", "check", "--config", str(config)],
                       capture_output=True, text=True, timeout=120, env=_clean_env(),
                       cwd=Path(__file__).resolve().parents[2])
    [line] = [x for x in p.stdout.splitlines() if x[5:].startswith("runtime:")]
    assert line.startswith("ok   runtime: mail_owner postfix can load everything"), p.stdout


def test_a_module_that_is_missing_for_everyone_is_named() -> None:
    problem = runtime_problem("postfix", ["holdscan_no_such_module"])
    assert isinstance(problem, Problem)
    assert problem.what.startswith("Postfix's mail_owner postfix cannot import "
                                   "holdscan_no_such_module (ModuleNotFoundError: ")
    assert "as postfix to see why" in problem.fix
    assert "\n" not in str(problem)

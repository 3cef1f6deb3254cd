"""Running as Postfix's mail_owner: who may start the dispatcher, dropping root, and
checking that the dropped process can still load everything it will need.

The dispatcher starts as root and becomes mail_owner (files it creates must belong
to it; a root-owned file in incoming makes qmgr exit). Python imports many modules
lazily: Celery's result and event code, kombu's Redis transport, shelve,
multiprocessing's spawn machinery for local scanning processes, codecs. A Python
that mail_owner cannot read (a venv inside root's home, or made from an
interpreter under /root, e.g. pyenv's) starts fine as root, drops privileges,
and then dies at the first of those imports while mail piles up in hold. So,
right after the drop, verify_runtime() imports every module the dispatcher will
import later and checks that the interpreter, its prefix and every import path
are readable, and otherwise says in one line which path mail_owner cannot read
and what to do. `holdscan check` runs the same verification as mail_owner.

    python -m holdscan.privileges USER   # the verification, as USER (when run as root)
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import pwd
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["check_identity", "drop_privileges", "verify_runtime", "verify_as",
           "runtime_problem", "Problem", "RUNTIME_MODULES", "PROJECT_PACKAGES"]

# Our own packages: every module in them is imported (workers: only what local
# scanning uses; workers.app and workers.tasks are the Celery worker's side).
PROJECT_PACKAGES = ("dispatcher", "shared", "workers")
SKIP_MODULES = frozenset({"workers.app", "workers.tasks"})

# Modules the dispatcher imports only after it has dropped privileges: inside
# functions, or lazily inside Celery and kombu (found by diffing sys.modules
# before the drop and after a dispatcher has scanned mail, in Celery and in
# local mode). Importing a module imports its own dependencies too.
RUNTIME_MODULES = (
    # holdscan's own entry point
    "holdscan.cli",
    # the standard library
    "shelve", "sqlite3", "hmac", "secrets", "socket", "resource", "json",
    "encodings.idna", "stringprep", "unicodedata", "runpy",
    "concurrent.futures.process", "multiprocessing.spawn",
    "multiprocessing.popen_spawn_posix", "multiprocessing.resource_tracker",
    "multiprocessing.synchronize",
    # Celery, kombu and the Redis client, as the dispatcher's transport uses them
    "celery", "celery.app.amqp", "celery.app.events", "celery.app.routes",
    "celery.app.task", "celery.backends.redis", "celery.canvas", "celery.events.dispatcher",
    "celery.events.receiver", "celery.fixups.django", "celery.loaders.app", "celery.result",
    "celery.worker.state", "billiard.einfo", "kombu.mixins", "kombu.transport.redis",
    "kombu.transport.virtual", "redis", "packaging.version",
    # the watcher and the metrics
    "pyinotify", "prometheus_client",
)

BOOTSTRAP_HINT = ("install holdscan in a venv made from /usr/bin/python3 outside root's home "
                  "(scripts/bootstrap.sh does), or make that path readable")


def _usage_error(message: str) -> Exception:
    # The CLI's own error type (printed as one line, exit 2); imported here, not at the
    # top, because holdscan.cli imports this module.
    from holdscan.cli import UsageError
    return UsageError(message)


def check_identity(user: str) -> None:
    """The dispatcher runs as root (and drops to mail_owner) or as mail_owner itself."""
    pw = pwd.getpwnam(user)
    if os.geteuid() not in (0, pw.pw_uid):
        raise _usage_error(f"holdscan dispatch must run as root (it then becomes {user}) or as "
                           f"Postfix's mail_owner {user}; you are uid {os.geteuid()}")


def drop_privileges(user: str, groups: Iterable[int] = ()) -> None:
    """Run as Postfix's mail_owner: files we create must belong to it, and a root-owned
    file in incoming makes qmgr exit. `groups`: supplementary groups to keep (the web's,
    so that quarantine entries can be shared with it)."""
    pw = pwd.getpwnam(user)
    if os.geteuid() == 0:
        os.setgroups(list(groups))
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


# -- what the process needs -------------------------------------------------------------

def runtime_modules() -> list[str]:
    """Every module name verify_runtime() imports: RUNTIME_MODULES, then our packages'."""
    names: list[str] = []
    for pkg_name in PROJECT_PACKAGES:
        names.append(pkg_name)
        try:
            pkg = importlib.import_module(pkg_name)
        except Exception:  # noqa: BLE001 — reported when verify_runtime imports it
            continue
        for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg_name + ".",
                                          onerror=lambda _name: None):
            if info.name not in SKIP_MODULES and \
                    not any(info.name.startswith(s + ".") for s in SKIP_MODULES):
                names.append(info.name)
    return list(RUNTIME_MODULES) + [m for m in names if m not in RUNTIME_MODULES]


def _project_dirs() -> list[str]:
    """The directories our packages are loaded from (an editable install puts them
    outside sys.path)."""
    dirs = []
    for name in (*PROJECT_PACKAGES, "holdscan"):
        mod = sys.modules.get(name)
        for d in getattr(mod, "__path__", []) or []:
            dirs.append(str(d))
    return dirs


def _state(path: str, want: int) -> str:
    """"ok", "missing" (not there, for anyone) or "denied" (there, but not for us)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"
    except PermissionError:
        return "denied"
    if stat.S_ISDIR(st.st_mode):
        want |= os.R_OK | os.X_OK
    return "ok" if os.access(path, want) else "denied"


def _describe(path: Path, st: os.stat_result) -> str:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{path} is {stat.filemode(st.st_mode)} {owner}"


def _blocker(path: str) -> str:
    """Which directory or file on the way to path stops us, described, or ""."""
    p = Path(path)
    for d in (*reversed(p.parents), p):
        try:
            st = os.stat(d)
        except OSError:
            return ""
        want = os.R_OK
        if stat.S_ISDIR(st.st_mode):
            want = os.X_OK if d != p else os.R_OK | os.X_OK
        if not os.access(d, want):
            return _describe(d, st)
    return ""


def _under(path: str, directory: str) -> bool:
    d = directory.rstrip("/") + "/"
    return path == directory or path.startswith(d)


def _loaded_from(directory: str) -> list[str]:
    """Top-level modules already loaded from under directory (as root, before the drop)."""
    names = set()
    for name, mod in list(sys.modules.items()):
        where = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", []) or []),
                                                        None)
        if where and _under(str(where), directory):
            names.add(name.split(".")[0])
    return sorted(n for n in names if not n.startswith("_"))


def _script_dir() -> str:
    """sys.path[0] of a console script: its bin/ directory, which nothing is imported from."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if argv0 and os.path.basename(argv0) not in ("-c", "-m") and sys.path and \
            os.path.dirname(os.path.realpath(argv0)) == sys.path[0]:
        return sys.path[0]
    return ""


def _import_paths() -> list[str]:
    """sys.path (without a console script's bin/) and our packages' directories."""
    skip = _script_dir()
    return list(dict.fromkeys(p for p in (*sys.path, *_project_dirs()) if p and p != skip))


def _import_failures(modules: Iterable[str]) -> dict[str, BaseException]:
    failed: dict[str, BaseException] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 — any failure to import is the finding
            failed[name] = e
    return failed


def _path_for(missing: str, denied: list[str]) -> str | None:
    """The denied import path that most likely holds module `missing`."""
    top = missing.split(".")[0]
    loaded = {p: _loaded_from(p) for p in denied}
    for p in denied:                        # where its package came from, before the drop
        if top in loaded[p]:
            return p
    stdlib = top in sys.stdlib_module_names
    for p in denied:                        # where modules of its kind came from
        if any((n in sys.stdlib_module_names) == stdlib for n in loaded[p]):
            return p
    for p in denied:
        if p.endswith("-packages") != stdlib:
            return p
    return denied[0] if denied else None


@dataclass(frozen=True)
class Problem:
    """What mail_owner cannot load, and what to do about it; str() is the one line."""

    what: str
    fix: str

    def __str__(self) -> str:
        return f"{self.what}: {self.fix}"


def runtime_problem(user: str, modules: Iterable[str] | None = None) -> Problem | None:
    """What the current process, running as `user`, cannot load; None if nothing.

    Call it after dropping privileges. It imports `modules` (default: every module
    the dispatcher imports lazily) and checks that sys.executable, sys.prefix and
    every import path that exists are readable.
    """
    failed = _import_failures(runtime_modules() if modules is None else modules)
    denied_paths = [p for p in _import_paths() if _state(p, os.R_OK) == "denied"]
    others = [(sys.executable, os.X_OK, "the interpreter, to start scanning processes")]
    others += [(p, os.R_OK, "the Python installation")
               for p in dict.fromkeys((sys.prefix, sys.base_prefix))]

    def cannot_read(path: str, what: str) -> Problem:
        blocker = _blocker(path)
        return Problem(f"Postfix's mail_owner {user} cannot read {path} (needed for {what}"
                       f"{'; ' + blocker if blocker else ''})", f"{BOOTSTRAP_HINT} to {user}")

    if failed:
        name, e = next(iter(failed.items()))
        missing = getattr(e, "name", None) if isinstance(e, ImportError) else None
        missing = missing or name
        path = _path_for(missing, denied_paths)
        if path is not None:
            return cannot_read(path, missing.split(".")[0])
        filename = getattr(e, "filename", None)
        if isinstance(e, PermissionError) and filename:
            return cannot_read(str(filename), name.split(".")[0])
        text = f"{type(e).__name__}: {e}".replace("\n", " ")
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return Problem(f"Postfix's mail_owner {user} cannot import {name}{more} ({text})",
                       f"run `{sys.executable} -c 'import {name}'` as {user} to see why; "
                       "reinstall holdscan if a package is missing")
    for path in denied_paths:
        needed = _loaded_from(path)
        if needed:
            return cannot_read(path, ", ".join(needed[:3]) + (" ..." if len(needed) > 3 else ""))
    for path, want, what in others:
        if _state(path, want) == "denied":
            return cannot_read(path, what)
    return None


def verify_runtime(user: str) -> None:
    """Raise the CLI's UsageError (one line, exit 2) if this process, now running as
    `user`, cannot load what the dispatcher will need."""
    problem = runtime_problem(user)
    if problem:
        raise _usage_error(str(problem))


def verify_as(user: str) -> Problem | None:
    """runtime_problem() as `user`, in a child process.

    The child is a fork of this interpreter that drops privileges the way the
    dispatcher does, so it sees what a dispatcher sees after the drop (a fresh
    interpreter started as `user` might not even start, and would say so in a
    traceback). Call it as root or as `user`.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:       # the child: never returns
        code = 0
        try:
            os.close(r)
            drop_privileges(user)
            problem = runtime_problem(user)
            answer = f"{problem.what}\0{problem.fix}" if problem else "ok"
        except BaseException as e:  # noqa: BLE001 — whatever happens, one line back
            answer = (f"the check as {user} failed ({type(e).__name__}: {e})\0"
                      "run `holdscan dispatch --once` to see the whole error")
            code = 1
        try:
            os.write(w, answer.encode("utf-8", "replace")[:65536])
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    answer = b"".join(chunks).decode("utf-8", "replace").strip()
    if answer == "ok":
        return None
    what, _, fix = answer.partition("\0")
    return Problem(what or f"the check as {user} ended without an answer",
                   fix or "run `holdscan dispatch --once` to see the whole error")


def main(argv: list[str] | None = None) -> int:
    """python -m holdscan.privileges USER: drop to USER (if root) and verify; one line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m holdscan.privileges USER", file=sys.stderr)
        return 2
    user = args[0]
    try:
        pwd.getpwnam(user)
    except KeyError:
        print(f"holdscan: no user {user}", file=sys.stderr)
        return 2
    drop_privileges(user)
    problem = runtime_problem(user)
    if problem is not None:
        print(f"holdscan: {problem}", file=sys.stderr)
        return 2
    print(f"ok: {user} can load everything the dispatcher needs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

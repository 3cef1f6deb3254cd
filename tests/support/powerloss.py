"""What a power cut may leave on disk: crash states from a system-call trace.

A small checker in the manner of ALICE (Pillai et al., "All File Systems Are
Not Created Equal", OSDI 2014), bounded as ALICE bounds its default search
(every prefix; each pending operation left out in turn, and all of them):

    initial = FsState.from_dir(root)                   the tree before the run
    run = trace([python, scenario.py, ...], root, ...,  strace the run; keep what it
                graveyard=grave)                        did to files under root
    pool = InodePool.collect(run.tracker, root, ...)    the run's inodes, for reuse
    report = explore(initial, run.ops, check, root,     every crash state, built as a
                     pool=pool, graveyard=grave)        real tree at root, one at a
                                                        time; check() says what is
                                                        wrong with each

The file-system model
---------------------

Operations are recorded on inodes (a file keeps its inode when renamed, and an
open descriptor follows it), not on names. A power cut loses whatever was not
yet durable; what makes each operation durable:

 operation under root        what it changes                   durable once, after it
 --------------------------  --------------------------------  ----------------------------
 open(O_CREAT) of a new      one entry in the directory D      D is fsync'd
   name, mkdir, link,
   unlink, rmdir
 rename S/a -> D/b           a in S and b in D, atomically     D is fsync'd (1)
 write, pwrite, writev,      the file's data                   the file is fsync'd or
   ftruncate, truncate,                                          fdatasync'd
   open(O_TRUNC)
 chmod, fchmod, fchmodat     the file's mode                   the file is fsync'd (2)
 fsync(D), D a directory     makes D's entries durable; not the files' data, not D's own
                             entry in its parent
 fsync(F), F a file          makes F's data and mode durable; not its name
 sync, syncfs                makes everything before it durable

 (1) "atomic" model (the default): a rename never leaves neither name, and never
     both (rename(2) is one transaction on ext4, XFS and btrfs; Postfix's own
     queue depends on it). Once the new name is durable (D fsync'd) the old one is
     gone with it. An fsync of S alone is not counted: conservative. (Waiting for
     both S and D would let a crash undo a rename whose new name an fsync had
     made durable: a state no file system that honours fsync can leave.)
     "strict" model (atomic_rename=False): each half is durable on its own
     directory's fsync. Until S is fsync'd the removal of a may be lost: the file
     then has both names (one inode, two links); until D is fsync'd too the whole
     rename may be lost. Still never neither name: then no protocol could work.
 (2) fdatasync need not write the mode, so it does not count for chmod.

Not modelled: a write torn in the middle (each write is kept or dropped whole);
owners and times; the allocation of an inode, which is harmless on its own (an
inode without a name is invisible), so it is never dropped. Dropping one op and
keeping the later ones can give states a real file system would not (an rmdir
kept, the unlink before it lost): the conservative side.

The crash states explored, for every k = 0..N (a crash after the first k ops):

    nothing dropped                              (what SIGKILL leaves)
    every op not durable at k dropped together
    each op not durable at k dropped alone, every other op kept
    (strict model, a rename: also only its removal dropped, when that is possible)

Identical trees are checked once (a hash of the tree), and `max_states` bounds
the total.

Inodes
------

A power cut keeps inode numbers, and the code under test relies on them (a
journal entry names the original's inode; a new queue file is named from its
own). So a crash state is built from the run's own inodes, not from copies:
while the scenario runs (and while check() recovers a state), keeping_inodes()
makes every unlink, and every rename that replaces a file, first hard-link the
file into a graveyard outside root, so each inode the run ever had survives it.
InodePool.collect() gathers them; materialize() renames each into place (the
only link, as before), rewriting its data and mode to the state's when they
differ and keeping its times; after the check they go back to the pool. Each
state is built at root itself, so absolute paths in the files stay true.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

# The system calls that change files or directories, and those needed to follow
# descriptors (open, close, dup*, lseek). "?" lets strace skip a name this
# architecture does not have (open, rename, mkdir ... do not exist on arm64).
TRACED = ("open", "openat", "creat", "write", "pwrite64", "writev", "pwritev", "pwritev2",
          "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir",
          "link", "linkat", "fsync", "fdatasync", "sync", "syncfs", "fchmod", "chmod",
          "fchmodat", "ftruncate", "truncate", "close", "dup", "dup2", "dup3", "lseek")

STRING_LIMIT = 1 << 24     # strace -s: longer writes would be cut, which parse() refuses


class TraceError(RuntimeError):
    """The trace cannot be turned into operations (unsupported call, or out of step)."""


# -- operations ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EntryChange:
    """Directory `dir` (an inode) gets `name` -> inode `ino`, or loses it (ino None).
    A removal only removes the name if it still points to `old`."""

    dir: int
    name: str
    ino: int | None
    old: int | None = None


@dataclass(frozen=True)
class Op:
    """One logical operation on the tree under root.

    kind: create mkdir link unlink rmdir rename (entries); write truncate chmod
    (an inode's data or mode); fsync fdatasync sync (durability only).
    """

    kind: str
    ino: int = 0                        # the inode created, written, chmod'ed, synced, (un)linked
    path: str = ""                      # relative to root, as it was then (for people)
    path2: str = ""                     # rename and link: the new name
    entries: tuple[EntryChange, ...] = ()
    new: tuple[int, str, int] | None = None     # an inode allocated: (ino, "file" or "dir", mode)
    offset: int = 0
    data: bytes = b""
    size: int = 0
    mode: int = 0
    dirs: tuple[int, int] = (0, 0)      # rename: (source directory, destination directory)
    line: int = 0                       # the trace line it came from

    def describe(self) -> str:
        if self.kind == "rename":
            return f"rename {self.path} -> {self.path2}"
        if self.kind == "link":
            return f"link {self.path} -> {self.path2}"
        if self.kind == "write":
            return f"write {len(self.data)} bytes at {self.offset} to {self.path}"
        if self.kind == "truncate":
            return f"truncate {self.path} to {self.size}"
        if self.kind in ("chmod", "create", "mkdir"):
            return f"{self.kind} {self.path} {self.mode:04o}"
        if self.kind == "sync":
            return "sync"
        return f"{self.kind} {self.path}"


def describe_ops(ops: Sequence[Op]) -> str:
    return "\n".join(f"{i:4d}  {op.describe()}" for i, op in enumerate(ops))


# -- the file system: inodes and directory entries --------------------------------------------

@dataclass
class Inode:
    kind: str           # "file" or "dir"
    mode: int
    data: bytes = b""


@dataclass
class FsState:
    """A tree as inodes and directory entries. Inode 1 is the root."""

    inodes: dict[int, Inode] = field(default_factory=dict)
    entries: dict[int, dict[str, int]] = field(default_factory=dict)
    root: int = 1

    @classmethod
    def empty(cls) -> FsState:
        return cls({1: Inode("dir", 0o755)}, {1: {}})

    @classmethod
    def from_dir(cls, root: str | os.PathLike[str]) -> FsState:
        """The tree under root as it is now (regular files and directories; sockets,
        FIFOs and symbolic links are left out). Hard links share their inode."""
        state = cls.empty()
        state.inodes[1].mode = os.stat(root).st_mode & 0o7777
        by_dev_ino: dict[tuple[int, int], int] = {}

        def walk(path: str, dir_ino: int) -> None:
            for e in sorted(os.scandir(path), key=lambda e: e.name):
                st = e.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
                if key in by_dev_ino:
                    state.entries[dir_ino][e.name] = by_dev_ino[key]
                    continue
                if e.is_dir(follow_symlinks=False):
                    ino = state._alloc(Inode("dir", st.st_mode & 0o7777))
                    state.entries[dir_ino][e.name] = ino
                    walk(e.path, ino)
                elif e.is_file(follow_symlinks=False):
                    with open(e.path, "rb") as f:
                        data = f.read()
                    ino = state._alloc(Inode("file", st.st_mode & 0o7777, data))
                    state.entries[dir_ino][e.name] = ino
                else:
                    continue
                by_dev_ino[key] = ino

        walk(os.fspath(root), 1)
        return state

    def _alloc(self, inode: Inode, ino: int | None = None) -> int:
        ino = ino if ino is not None else max(self.inodes) + 1
        self.inodes[ino] = inode
        if inode.kind == "dir":
            self.entries.setdefault(ino, {})
        return ino

    def copy(self) -> FsState:
        return FsState({i: replace(n) for i, n in self.inodes.items()},
                       {d: dict(e) for d, e in self.entries.items()}, self.root)

    def lookup(self, rel: str) -> int | None:
        ino = self.root
        for part in [p for p in rel.split("/") if p]:
            if ino not in self.entries or part not in self.entries[ino]:
                return None
            ino = self.entries[ino][part]
        return ino

    def apply(self, op: Op, drop_removal: bool = False) -> None:
        """Carry out `op`. drop_removal: a rename whose removal of the old name is lost."""
        if op.new is not None and op.new[0] not in self.inodes:
            ino, kind, mode = op.new
            self._alloc(Inode(kind, mode), ino)
        for ch in op.entries:
            names = self.entries.setdefault(ch.dir, {})
            if ch.ino is None:
                if drop_removal:
                    continue
                if names.get(ch.name) == ch.old:
                    del names[ch.name]
            else:
                names[ch.name] = ch.ino
        node = self.inodes.get(op.ino)
        if op.kind == "write" and node is not None:
            data = node.data
            if len(data) < op.offset:
                data += bytes(op.offset - len(data))
            node.data = data[:op.offset] + op.data + data[op.offset + len(op.data):]
        elif op.kind == "truncate" and node is not None:
            node.data = node.data[:op.size] + bytes(max(0, op.size - len(node.data)))
        elif op.kind == "chmod" and node is not None:
            node.mode = op.mode

    def walk(self) -> Iterator[tuple[str, int]]:
        """(relative path, inode) of every name reachable from the root, sorted."""
        def visit(dir_ino: int, prefix: str, stack: tuple[int, ...]) -> Iterator[tuple[str, int]]:
            for name in sorted(self.entries.get(dir_ino, {})):
                ino = self.entries[dir_ino][name]
                rel = f"{prefix}{name}"
                yield rel, ino
                if self.inodes[ino].kind == "dir" and ino not in stack:
                    yield from visit(ino, rel + "/", stack + (ino,))
        yield from visit(self.root, "", (self.root,))

    def digest(self) -> str:
        h = hashlib.sha256()
        first: dict[int, str] = {}
        for rel, ino in self.walk():
            node = self.inodes[ino]
            link = first.setdefault(ino, rel)
            h.update(f"{rel}\0{node.kind}\0{node.mode:o}\0{link}\0".encode())
            h.update(hashlib.sha256(node.data).digest())
        return h.hexdigest()

    def materialize(self, dest: str | os.PathLike[str], pool: InodePool | None = None) -> None:
        """Build the tree at dest (which must not exist). A file reached by a second
        name is a hard link; a directory reached twice (strict model) is built twice.
        Files whose inode is in `pool` are that inode, renamed into place."""
        dest = Path(dest)
        dest.mkdir(parents=True)
        first: dict[int, Path] = {}
        dirs: list[tuple[Path, int]] = [(dest, self.inodes[self.root].mode)]
        for rel, ino in self.walk():
            node, path = self.inodes[ino], dest / rel
            if node.kind == "dir":
                path.mkdir()
                dirs.append((path, node.mode))
            elif ino in first:
                os.link(first[ino], path)
            else:
                if pool is None or not pool.place(ino, path, node):
                    path.write_bytes(node.data)
                    os.chmod(path, node.mode)
                first[ino] = path
        for path, mode in reversed(dirs):
            os.chmod(path, mode | 0o700)


# -- from paths and descriptors to operations -----------------------------------------------

@dataclass
class _Fd:
    ino: int
    pos: list[int]          # shared by dup'ed descriptors
    append: bool


class Tracker:
    """Follows a run, keeping a live copy of the tree, and turns what it does into Ops.

    Paths are relative to root. The methods are what the syscall parser calls; unit
    tests call them directly to write an operation list by hand.
    """

    def __init__(self, initial: FsState, umask: int = 0o022) -> None:
        self.initial = initial.copy()
        self.live = initial.copy()
        self.umask = umask
        self.ops: list[Op] = []
        self.line = 0
        self.kept: dict[int, list[str]] = {}    # inode -> its names outside root (graveyard)

    def _emit(self, op: Op) -> Op:
        op = replace(op, line=self.line)
        self.live.apply(op)
        self.ops.append(op)
        return op

    def _parent(self, rel: str) -> tuple[int, str]:
        parent, _, name = rel.rstrip("/").rpartition("/")
        dir_ino = self.live.lookup(parent)
        if dir_ino is None or self.live.inodes[dir_ino].kind != "dir":
            raise TraceError(f"line {self.line}: no directory {parent!r} for {rel!r} in the "
                             "model: the tree changed outside the trace?")
        return dir_ino, name

    def ino(self, rel: str) -> int:
        ino = self.live.lookup(rel)
        if ino is None:
            raise TraceError(f"line {self.line}: {rel!r} is not in the model: the tree "
                             "changed outside the trace?")
        return ino

    def next_ino(self) -> int:
        return max(self.live.inodes) + 1

    # each returns the inode it is about
    def create(self, rel: str, mode: int = 0o600, kind: str = "file") -> int:
        dir_ino, name = self._parent(rel)
        ino = self.next_ino()
        self._emit(Op("mkdir" if kind == "dir" else "create", ino, rel,
                      entries=(EntryChange(dir_ino, name, ino),),
                      new=(ino, kind, mode & ~self.umask & 0o7777), mode=mode & ~self.umask))
        return ino

    def mkdir(self, rel: str, mode: int = 0o777) -> int:
        return self.create(rel, mode, "dir")

    def link(self, rel: str, rel2: str) -> int:
        ino = self.ino(rel)
        dir_ino, name = self._parent(rel2)
        self._emit(Op("link", ino, rel, rel2, entries=(EntryChange(dir_ino, name, ino),)))
        return ino

    def link_out(self, rel: str, outside: str) -> int:
        """A hard link from root to outside it: nothing changes under root, but the
        inode now outlives its names here (keeping_inodes)."""
        ino = self.ino(rel)
        self.kept.setdefault(ino, []).append(outside)
        return ino

    def unlink(self, rel: str) -> int:
        ino = self.ino(rel)
        dir_ino, name = self._parent(rel)
        kind = "rmdir" if self.live.inodes[ino].kind == "dir" else "unlink"
        self._emit(Op(kind, ino, rel, entries=(EntryChange(dir_ino, name, None, ino),)))
        return ino

    def rename(self, rel: str, rel2: str) -> int:
        ino = self.ino(rel)
        src_dir, src_name = self._parent(rel)
        dst_dir, dst_name = self._parent(rel2)
        if (src_dir, src_name) == (dst_dir, dst_name):
            return ino
        replaced = self.live.entries[dst_dir].get(dst_name)
        self._emit(Op("rename", ino, rel, rel2,
                      entries=(EntryChange(src_dir, src_name, None, ino),
                               EntryChange(dst_dir, dst_name, ino, replaced)),
                      dirs=(src_dir, dst_dir)))
        return ino

    def write(self, ino: int, offset: int, data: bytes) -> None:
        self._emit(Op("write", ino, self.path_of(ino), offset=offset, data=bytes(data)))

    def truncate(self, ino: int, size: int) -> None:
        self._emit(Op("truncate", ino, self.path_of(ino), size=size))

    def chmod(self, ino: int, mode: int) -> None:
        self._emit(Op("chmod", ino, self.path_of(ino), mode=mode & 0o7777))

    def fsync(self, ino: int, data_only: bool = False) -> None:
        self._emit(Op("fdatasync" if data_only else "fsync", ino, self.path_of(ino)))

    def sync(self) -> None:
        self._emit(Op("sync"))

    def path_of(self, ino: int) -> str:
        if ino == self.live.root:
            return "."
        for rel, i in self.live.walk():
            if i == ino:
                return rel
        return f"(inode {ino}, no name)"

    # by path, for hand-written lists
    def write_path(self, rel: str, data: bytes, offset: int | None = None) -> None:
        ino = self.ino(rel)
        self.write(ino, len(self.live.inodes[ino].data) if offset is None else offset, data)

    def fsync_path(self, rel: str) -> None:
        self.fsync(self.ino(rel))

    def chmod_path(self, rel: str, mode: int) -> None:
        self.chmod(self.ino(rel), mode)


# -- strace ---------------------------------------------------------------------------------

_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(.*)$")
_STRING = re.compile(r'^"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?$')
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<(.*)>.*)?$")    # "(deleted)" may follow
_HEX = re.compile(r"^((?:\\x[0-9a-f]{2})*)")


def _split_args(s: str) -> list[str]:
    out, depth, cur, quoted = [], 0, [], False
    for ch in s:
        if quoted:
            cur.append(ch)
            quoted = ch != '"'
            continue
        if ch == '"':
            quoted = True
        elif ch in "[{<":
            depth += 1
        elif ch in "]}>":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if cur or out:
        out.append("".join(cur).strip())
    return out


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace("\\x", ""))


def _string(arg: str) -> bytes:
    m = _STRING.match(arg)
    if m is None:
        raise TraceError(f"not a string: {arg[:80]}")
    if m.group(2):
        raise TraceError(f"strace cut a string at {STRING_LIMIT} bytes: raise STRING_LIMIT")
    return _hex(m.group(1))


def _fd(arg: str) -> tuple[int | None, str | None]:
    """(descriptor or None for AT_FDCWD, the path strace -y printed or None)."""
    m = _FD.match(arg)
    if m is None:
        raise TraceError(f"not a descriptor: {arg[:80]}")
    fd = None if m.group(1) == "AT_FDCWD" else int(m.group(1))
    shown = None
    if m.group(2) is not None:      # a path (hex), or a socket
        h = _HEX.match(m.group(2))
        shown = _hex(h.group(1)).decode("utf-8", "surrogateescape") if h and h.group(1) else None
    return fd, shown


def _int(arg: str) -> int:
    return int(arg, 8) if arg.startswith("0") and arg.isdigit() else int(arg, 0)


def _iov(arg: str) -> bytes:
    return b"".join(_hex(h) for h in re.findall(r'iov_base="((?:\\x[0-9a-f]{2})*)"', arg))


@dataclass
class Syscall:
    pid: int
    name: str
    args: list[str]
    ret: str
    line: int

    @property
    def result(self) -> int:
        m = re.match(r"-?\d+", self.ret)
        return int(m.group(0)) if m else -1


def parse_strace(text: str) -> list[Syscall]:
    """Lines of `strace -f -xx -y` output, with <unfinished ...> calls joined again."""
    calls, pending = [], {}
    for n, raw in enumerate(text.splitlines(), 1):
        pid_s, _, rest = raw.partition(" ")
        if not pid_s.isdigit():
            pid_s, rest = "0", raw
        pid = int(pid_s)
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[:-len("<unfinished ...>")].rstrip()
            continue
        m = re.match(r"^<\.\.\. \w+ resumed>\s?(.*)$", rest)
        if m:
            rest = pending.pop(pid, "") + m.group(1)
        c = _CALL.match(rest)
        if c is None:
            continue        # signals, exits, "= ?" of a process that died in the call
        calls.append(Syscall(pid, c.group(1), _split_args(c.group(2)), c.group(3), n))
    return calls


class _Translator:
    """Syscalls -> Tracker calls, for the paths under root."""

    def __init__(self, tracker: Tracker, root: str, cwd: str) -> None:
        self.t = tracker
        self.root = os.path.realpath(root)
        self.cwd = cwd
        self.fds: dict[tuple[int, int], _Fd] = {}

    def rel(self, path: str) -> str | None:
        path = os.path.normpath(path)
        if path == self.root:
            return ""
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1:]
        return None

    def resolve(self, pid: int, dirfd_arg: str | None, path: bytes) -> str | None:
        return self.rel(self.absolute(pid, dirfd_arg, path))

    def absolute(self, pid: int, dirfd_arg: str | None, path: bytes) -> str:
        p = path.decode("utf-8", "surrogateescape")
        if not p.startswith("/"):
            base = self.cwd
            if dirfd_arg is not None:
                fd, shown = _fd(dirfd_arg)
                if fd is not None and (pid, fd) in self.fds:
                    base = os.path.join(self.root, self.t.path_of(self.fds[pid, fd].ino))
                elif shown is not None:
                    base = shown
            p = os.path.join(base, p)
        return os.path.normpath(p)

    def fd(self, pid: int, arg: str) -> _Fd | None:
        fd, _ = _fd(arg)
        return self.fds.get((pid, fd)) if fd is not None else None

    def handle(self, c: Syscall) -> None:
        self.t.line = c.line
        if c.result < 0:
            return
        a, name = c.args, c.name
        if name in ("open", "openat", "creat"):
            if name == "creat":
                path_arg, flags, mode, dirfd = a[0], "O_CREAT|O_WRONLY|O_TRUNC", a[1], None
            elif name == "open":
                path_arg, flags, dirfd = a[0], a[1], None
                mode = a[2] if len(a) > 2 else "0"
            else:
                dirfd, path_arg, flags = a[0], a[1], a[2]
                mode = a[3] if len(a) > 3 else "0"
            rel = self.resolve(c.pid, dirfd, _string(path_arg))
            if rel is None:
                return
            flagset = set(flags.split("|"))
            ino = self.t.live.lookup(rel)
            if ino is None:
                if "O_CREAT" not in flagset:
                    raise TraceError(f"line {c.line}: {rel!r} opened but not in the model: "
                                     "the tree changed outside the trace?")
                ino = self.t.create(rel, _int(mode))
            elif "O_TRUNC" in flagset and self.t.live.inodes[ino].kind == "file":
                self.t.truncate(ino, 0)
            self.fds[c.pid, c.result] = _Fd(ino, [0], "O_APPEND" in flagset)
        elif name in ("write", "pwrite64", "writev", "pwritev", "pwritev2"):
            f = self.fd(c.pid, a[0])
            if f is None:
                return
            data = _string(a[1]) if name in ("write", "pwrite64") else _iov(a[1])
            data = data[:c.result]
            if name in ("pwrite64", "pwritev", "pwritev2"):
                offset = _int(a[3] if name == "pwrite64" else a[3])
            else:
                offset = len(self.t.live.inodes[f.ino].data) if f.append else f.pos[0]
                f.pos[0] = offset + len(data)
            self.t.write(f.ino, offset, data)
        elif name == "lseek":
            f = self.fd(c.pid, a[0])
            if f is not None:
                f.pos[0] = c.result
        elif name in ("fsync", "fdatasync"):
            f = self.fd(c.pid, a[0])
            if f is not None:
                self.t.fsync(f.ino, data_only=name == "fdatasync")
        elif name in ("sync", "syncfs"):
            self.t.sync()
        elif name == "fchmod":
            f = self.fd(c.pid, a[0])
            if f is not None:
                self.t.chmod(f.ino, _int(a[1]))
        elif name in ("chmod", "fchmodat"):
            dirfd, path_arg, mode = (None, a[0], a[1]) if name == "chmod" else (a[0], a[1], a[2])
            rel = self.resolve(c.pid, dirfd, _string(path_arg))
            if rel is not None:
                self.t.chmod(self.t.ino(rel), _int(mode))
        elif name in ("ftruncate", "truncate"):
            if name == "ftruncate":
                f = self.fd(c.pid, a[0])
                ino = f.ino if f is not None else None
            else:
                rel = self.resolve(c.pid, None, _string(a[0]))
                ino = self.t.ino(rel) if rel is not None else None
            if ino is not None:
                self.t.truncate(ino, _int(a[1]))
        elif name in ("rename", "renameat", "renameat2", "link", "linkat"):
            if name in ("rename", "link"):
                src = self.resolve(c.pid, None, _string(a[0]))
                dst = self.resolve(c.pid, None, _string(a[1]))
            else:
                src = self.resolve(c.pid, a[0], _string(a[1]))
                dst = self.resolve(c.pid, a[2], _string(a[3]))
            if name == "renameat2" and "RENAME_EXCHANGE" in a[4]:
                raise TraceError(f"line {c.line}: RENAME_EXCHANGE is not modelled")
            if src is None and dst is None:
                return
            if name.startswith("link") and src is not None and dst is None:
                outside = a[1] if name == "link" else a[3]
                dirfd = None if name == "link" else a[2]
                self.t.link_out(src, self.absolute(c.pid, dirfd, _string(outside)))
                return
            if src is None or dst is None:
                raise TraceError(f"line {c.line}: {name} across the edge of the traced tree "
                                 f"({src or a[0]} -> {dst or a[-1]}) is not modelled")
            if name.startswith("link"):
                self.t.link(src, dst)
            else:
                self.t.rename(src, dst)
        elif name in ("unlink", "unlinkat", "rmdir"):
            dirfd, path_arg = (a[0], a[1]) if name == "unlinkat" else (None, a[0])
            rel = self.resolve(c.pid, dirfd, _string(path_arg))
            if rel is not None:
                self.t.unlink(rel)
        elif name in ("mkdir", "mkdirat"):
            dirfd, path_arg, mode = (None, a[0], a[1]) if name == "mkdir" else (a[0], a[1], a[2])
            rel = self.resolve(c.pid, dirfd, _string(path_arg))
            if rel is not None:
                self.t.mkdir(rel, _int(mode))
        elif name == "close":
            fd, _ = _fd(a[0])
            self.fds.pop((c.pid, fd), None)    # type: ignore[arg-type]
        elif name in ("dup", "dup2", "dup3"):
            f = self.fd(c.pid, a[0])
            if f is not None:
                self.fds[c.pid, c.result] = f
            else:
                self.fds.pop((c.pid, c.result), None)


def track_strace(text: str, root: str | os.PathLike[str], initial: FsState,
                 cwd: str = "/", umask: int = 0o022) -> Tracker:
    """Follow a traced run under root, starting from `initial` (the tree under root
    when the run started); the Tracker has the ops and the tree as the run left it.
    Descriptors are followed per process; one inherited across fork is not (the
    scenarios here do not fork)."""
    tracker = Tracker(initial, umask)
    translator = _Translator(tracker, os.fspath(root), cwd)
    for call in parse_strace(text):
        translator.handle(call)
    return tracker


def ops_from_strace(text: str, root: str | os.PathLike[str], initial: FsState,
                    cwd: str = "/", umask: int = 0o022) -> list[Op]:
    return track_strace(text, root, initial, cwd, umask).ops


GRAVEYARD_ENV = "POWERLOSS_GRAVEYARD"


@contextmanager
def keeping_inodes(graveyard: str | os.PathLike[str]) -> Iterator[None]:
    """While active, os.unlink/os.remove (so Path.unlink and shutil.rmtree too) and an
    os.rename/os.replace onto an existing file first hard-link the file that loses its
    name into `graveyard` (on the same file system), so that its inode lives on.
    Everything else about the calls is unchanged."""
    graveyard = os.fspath(graveyard)
    os.makedirs(graveyard, exist_ok=True)
    real = {name: getattr(os, name) for name in ("unlink", "remove", "rename", "replace")}
    counter = itertools.count()

    def keep(path: object, dir_fd: int | None, other: object = None,
             other_fd: int | None = None) -> str | None:
        try:
            st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)  # type: ignore[arg-type]
            if other is not None:
                src = os.stat(other, dir_fd=other_fd, follow_symlinks=False)  # type: ignore[arg-type]
                if (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino):
                    return None
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        kept = os.path.join(graveyard, f"{st.st_ino}.{next(counter)}")
        os.link(path, kept, src_dir_fd=dir_fd, follow_symlinks=False)  # type: ignore[arg-type]
        return kept

    def unlinker(name: str) -> Callable[..., None]:
        def unlink(path: object, *, dir_fd: int | None = None) -> None:
            kept = keep(path, dir_fd)
            try:
                real[name](path, dir_fd=dir_fd)
            except BaseException:
                if kept:
                    real["unlink"](kept)
                raise
        return unlink

    def mover(name: str) -> Callable[..., None]:
        def move(src: object, dst: object, *, src_dir_fd: int | None = None,
                 dst_dir_fd: int | None = None) -> None:
            kept = keep(dst, dst_dir_fd, src, src_dir_fd)
            try:
                real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            except BaseException:
                if kept:
                    real["unlink"](kept)
                raise
        return move

    os.unlink, os.remove = unlinker("unlink"), unlinker("remove")  # type: ignore[assignment]
    os.rename, os.replace = mover("rename"), mover("replace")  # type: ignore[assignment]
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)


_kept_for_good: list[object] = []


def keep_inodes_from_env() -> None:
    """For a scenario: keep inodes (for the rest of the process) if trace() asked."""
    if os.environ.get(GRAVEYARD_ENV):
        keeper = keeping_inodes(os.environ[GRAVEYARD_ENV])
        keeper.__enter__()
        _kept_for_good.append(keeper)     # collected, it would undo itself


@dataclass
class TracedRun:
    tracker: Tracker
    returncode: int
    stdout: str
    stderr: str
    trace_file: Path

    @property
    def ops(self) -> list[Op]:
        return self.tracker.ops


def trace(argv: Sequence[str], root: str | os.PathLike[str], trace_file: str | os.PathLike[str],
          *, initial: FsState | None = None, env: dict[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None, umask: int = 0o022,
          graveyard: str | os.PathLike[str] | None = None, timeout: float = 120) -> TracedRun:
    """Run argv under strace and follow what it did under root. `initial` is the tree
    under root before the run (taken now if not given). With `graveyard`, the run is
    asked (environment variable POWERLOSS_GRAVEYARD, see keep_inodes_from_env) to keep
    every inode it unlinks there."""
    if shutil.which("strace") is None:
        raise TraceError("strace is not installed (Debian package strace)")
    root = os.path.realpath(root)
    initial = initial if initial is not None else FsState.from_dir(root)
    cwd = os.path.realpath(cwd or os.getcwd())
    env = dict(os.environ if env is None else env)
    if graveyard is not None:
        os.makedirs(graveyard, exist_ok=True)
        env[GRAVEYARD_ENV] = os.path.realpath(graveyard)
    cmd = ["strace", "-f", "-qq", "-e", "signal=none",
           "-e", "trace=" + ",".join("?" + name for name in TRACED),
           "-s", str(STRING_LIMIT), "-xx", "-y", "-o", os.fspath(trace_file), "--", *argv]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       umask=umask, check=False)
    text = Path(trace_file).read_text()
    tracker = (track_strace(text, root, initial, cwd, umask) if p.returncode == 0
               else Tracker(initial, umask))
    return TracedRun(tracker, p.returncode, p.stdout, p.stderr, Path(trace_file))


class InodePool:
    """The run's file inodes, one link each, under `directory` (named by model inode),
    lent to one crash state at a time."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.members: dict[int, tuple[int, int]] = {}      # model inode -> (st_dev, st_ino)
        self.by_real: dict[tuple[int, int], int] = {}
        self.times: dict[int, tuple[int, int]] = {}        # model inode -> (atime_ns, mtime_ns)
        self.lost: set[int] = set()

    @classmethod
    def collect(cls, tracker: Tracker, root: str | os.PathLike[str],
                directory: str | os.PathLike[str]) -> InodePool:
        """Move every file inode of the finished run (under root, or kept outside it)
        into the pool, check each against the model, and empty root (removed)."""
        root = Path(os.path.realpath(root))
        pool = cls(Path(directory))
        pool.dir.mkdir(parents=True)
        names: dict[int, list[Path]] = {}
        for rel, ino in tracker.live.walk():
            if tracker.live.inodes[ino].kind == "file":
                names.setdefault(ino, []).append(root / rel)
        for ino, outside in tracker.kept.items():
            names.setdefault(ino, []).extend(Path(p) for p in outside)
        for ino, paths in names.items():
            existing = [p for p in paths if p.exists()]
            if not existing:
                continue
            first = existing[0]
            for p in existing[1:]:
                os.unlink(p)
            target = pool.dir / str(ino)
            os.rename(first, target)
            st = os.lstat(target)
            if st.st_nlink != 1 or target.read_bytes() != tracker.live.inodes[ino].data:
                raise TraceError(f"inode {ino} ({first}) is not what the trace says it is "
                                 f"(links {st.st_nlink}): the model is out of step")
            pool.members[ino] = (st.st_dev, st.st_ino)
            pool.by_real[st.st_dev, st.st_ino] = ino
            pool.times[ino] = (st.st_atime_ns, st.st_mtime_ns)
        shutil.rmtree(root)
        return pool

    def place(self, ino: int, path: Path, node: Inode) -> bool:
        """Rename the pool's inode `ino` to path, with node's data and mode."""
        if ino not in self.members or ino in self.lost:
            return False
        os.rename(self.dir / str(ino), path)
        if path.read_bytes() != node.data:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                view = memoryview(node.data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        os.chmod(path, node.mode)
        os.utime(path, ns=self.times[ino])
        return True

    def reclaim(self, *trees: Path) -> list[int]:
        """Take the pool's inodes back from wherever the check left them under `trees`
        (a renamed file is found by its inode). Returns the model inodes now lost."""
        for tree in trees:
            for dirpath, _, filenames in os.walk(tree):
                for name in filenames:
                    p = os.path.join(dirpath, name)
                    st = os.lstat(p)
                    ino = self.by_real.get((st.st_dev, st.st_ino))
                    if ino is None:
                        continue
                    target = self.dir / str(ino)
                    if target.exists():
                        os.unlink(p)
                    else:
                        os.rename(p, target)
        missing = [i for i in self.members if i not in self.lost
                   and not (self.dir / str(i)).exists()]
        self.lost.update(missing)
        return missing


# -- crash states ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Drop:
    """Op `index` lost by the crash: whole, or (a rename, strict model) only its removal."""

    index: int
    removal_only: bool = False


@dataclass
class CrashState:
    k: int                      # the crash came after ops[:k]
    dropped: tuple[Drop, ...]
    state: FsState

    def describe(self, ops: Sequence[Op]) -> str:
        where = (f"crash after op {self.k - 1} ({ops[self.k - 1].describe()})" if self.k
                 else "crash before the first op")
        if not self.dropped:
            return f"{where}; nothing lost"
        lost = "; ".join(
            f"op {d.index} ({ops[d.index].describe()})"
            + (": only the removal of the old name, the file has both names"
               if d.removal_only else "") for d in self.dropped)
        return f"{where}; lost: {lost}"


class Durability:
    """When each op becomes durable, per the model in the module docstring."""

    def __init__(self, ops: Sequence[Op], atomic_rename: bool = True) -> None:
        self.ops = ops
        self.atomic_rename = atomic_rename
        n = len(ops)
        never = n + 1
        # Built backwards: for each op, the first later op that makes it durable.
        self.whole: list[int] = [never] * n      # op durable once this op has run
        self.removal: list[int] = [never] * n    # strict rename: its removal durable
        full: dict[int, int] = {}        # inode -> index of the next fsync
        data: dict[int, int] = {}        # inode -> index of the next fsync or fdatasync
        sync_all = never
        for i in range(n - 1, -1, -1):
            op = ops[i]
            if op.kind in ("write", "truncate"):
                self.whole[i] = min(data.get(op.ino, never), sync_all)
            elif op.kind == "chmod":
                self.whole[i] = min(full.get(op.ino, never), sync_all)
            elif op.kind == "rename":
                src, dst = op.dirs
                self.whole[i] = min(full.get(dst, never), sync_all)
                self.removal[i] = min(full.get(src, never), sync_all)
            elif op.entries:
                self.whole[i] = min(max(full.get(ch.dir, never) for ch in op.entries), sync_all)
            else:
                self.whole[i] = -1       # fsync, sync: nothing to lose
            if op.kind == "fsync":
                full[op.ino] = i
                data[op.ino] = i
            elif op.kind == "fdatasync":
                data[op.ino] = i
            elif op.kind == "sync":
                sync_all = i

    def losable(self, k: int) -> list[Drop]:
        """What a crash after ops[:k] may lose, one Drop at a time."""
        out = []
        for i in range(k):
            op = self.ops[i]
            if self.whole[i] < 0:
                continue
            if op.kind == "rename" and not self.atomic_rename:
                removal_durable = self.removal[i] < k
                if self.whole[i] >= k and not removal_durable:
                    out.append(Drop(i))
                if not removal_durable:
                    out.append(Drop(i, removal_only=True))
            elif self.whole[i] >= k:
                out.append(Drop(i))
        return out


def build(initial: FsState, ops: Sequence[Op], k: int, dropped: Sequence[Drop]) -> FsState:
    state = initial.copy()
    lost = {d.index: d for d in dropped}
    for i, op in enumerate(ops[:k]):
        d = lost.get(i)
        if d is None:
            state.apply(op)
        elif d.removal_only:
            state.apply(op, drop_removal=True)
        elif op.new is not None:
            # The inode still exists (allocated), only what the op did is lost.
            state.apply(Op("alloc", new=op.new))
    return state


def crash_states(initial: FsState, ops: Sequence[Op], atomic_rename: bool = True
                 ) -> Iterator[CrashState]:
    """Every crash state of the bounded exploration, duplicates included."""
    durability = Durability(ops, atomic_rename)
    for k in range(len(ops) + 1):
        losable = durability.losable(k)
        choices: list[tuple[Drop, ...]] = [()]
        if losable:
            together: dict[int, Drop] = {}
            for d in losable:     # all at once: a whole rename rather than its removal
                if d.index not in together or together[d.index].removal_only:
                    together[d.index] = d
            every = tuple(sorted(together.values(), key=lambda d: d.index))
            choices += [every] + [(d,) for d in losable if (d,) != every]
        for dropped in choices:
            yield CrashState(k, dropped, build(initial, ops, k, dropped))


@dataclass
class Violation:
    description: str            # the crash state
    problems: list[str]

    def __str__(self) -> str:
        return self.description + "\n" + "\n".join(f"    {p}" for p in self.problems)


@dataclass
class Report:
    ops: int
    generated: int = 0
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    truncated: bool = False
    inodes_lost: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.ops} operations, {self.generated} crash states, {self.checked} distinct "
                f"checked in {self.seconds:.1f}s, {len(self.violations)} violating"
                + (" (stopped at max_states)" if self.truncated else "")
                + (f"; inodes lost by the checks: {self.inodes_lost}" if self.inodes_lost
                   else ""))


def explore(initial: FsState, ops: Sequence[Op], check: Callable[[Path], list[str]],
            dest: str | os.PathLike[str], *, pool: InodePool | None = None,
            graveyard: str | os.PathLike[str] | None = None, atomic_rename: bool = True,
            max_states: int = 5000, keep_violating: int = 0) -> Report:
    """Build every distinct crash state at dest (which must not exist), one at a time,
    and check it; dest is removed after each check.

    check(dest) recovers the tree at dest and returns the problems it finds there
    (empty: fine). With a pool, files are the run's inodes and the check runs under
    keeping_inodes(graveyard), so that the inodes come back for the next state. The
    first `keep_violating` violating trees are copied to dest's parent (violation-N).
    """
    start = time.monotonic()
    report = Report(len(ops))
    seen: set[str] = set()
    dest = Path(dest)
    grave = Path(graveyard) if graveyard is not None else dest.parent / "graveyard"
    for cs in crash_states(initial, ops, atomic_rename):
        report.generated += 1
        digest = cs.state.digest()
        if digest in seen:
            continue
        if report.checked >= max_states:
            report.truncated = True
            break
        seen.add(digest)
        report.checked += 1
        cs.state.materialize(dest, pool)
        try:
            if pool is not None:
                with keeping_inodes(grave):
                    problems = check(dest)
            else:
                problems = check(dest)
            if problems:
                report.violations.append(Violation(cs.describe(ops), problems))
                if len(report.violations) <= keep_violating:
                    shutil.copytree(dest, dest.parent / f"violation-{len(report.violations)}",
                                    symlinks=True)
        finally:
            if pool is not None:
                report.inodes_lost += pool.reclaim(dest, grave)
            shutil.rmtree(dest)
            if grave.exists():
                shutil.rmtree(grave)
    report.seconds = time.monotonic() - start
    return report

"""A Debian bookworm base image made on this machine, for building the compose stack where
no container registry can be reached.

    tag = ensure_base_image(engine)     # "holdscan-test-base:<key>", built once, then reused

`debootstrap --variant=minbase bookworm` from the mirror the host's own apt sources name
(/etc/apt/sources.list, sources.list.d/*.list and deb822 *.sources; no mirror is written
into the repository), with Python in a venv at /opt/python on PATH (what the official
python image gives a Dockerfile: `pip` and `python` that install into the image), and the
host's ways out to the package registries copied in, so that `apt-get` and `pip` in a
Dockerfile reach what the host reaches:

- the CA certificates in /usr/local/share/ca-certificates/ (update-ca-certificates runs
  inside), and pip told to use the system's bundle when the host added any;
- the host's bookworm apt sources (and the keyrings they are signed by);
- the host's pip configuration: /etc/pip.conf, /etc/xdg/pip/, PIP_INDEX_URL and friends.

The root file system is kept as a tarball in CACHE_DIR named after a hash of all of those
inputs, and imported with `docker import`; an image or tarball with that hash is reused.
Delete CACHE_DIR to start from scratch.
"""

from __future__ import annotations

import configparser
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from holdscan.lab.docker import DockerEngine, DockerError

CACHE_DIR = Path("/var/cache/holdscan-test")
SUITE = "bookworm"
VARIANT = "minbase"
# What every image of the stack needs from the base: Python for holdscan, ca-certificates
# for the registries, passwd for useradd, and (in the test images) nothing else.
INCLUDE = ("python3", "python3-venv", "ca-certificates", "passwd")
VENV = "/opt/python"
IMAGE = "holdscan-test-base"
# Changes to how the root file system is made: bump to make every cached tarball stale.
RECIPE = 1
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class BaseImageError(DockerError):
    """The base image cannot be made; the message says what to do."""


# -- the host's apt sources ------------------------------------------------------------------

@dataclass
class AptSource:
    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str]
    signed_by: str = ""
    origin: str = ""            # the file it came from, for messages
    options: dict[str, str] = field(default_factory=dict)

    def deb822(self) -> str:
        lines = [f"Types: {' '.join(self.types)}", f"URIs: {' '.join(self.uris)}",
                 f"Suites: {' '.join(self.suites)}", f"Components: {' '.join(self.components)}"]
        key = self.signed_by.strip("\n")
        if "\n" in key:
            # An inline key: on the lines after the field's, each started with a space
            # ("." for an empty one), as apt writes it.
            lines.append("Signed-By:\n " + "\n ".join(
                line if line.strip() else "." for line in key.splitlines()))
        elif key:
            lines.append(f"Signed-By: {key}")
        return "\n".join(lines) + "\n"


def _one_line_sources(text: str, origin: str) -> list[AptSource]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        kind, rest = words[0], words[1:]
        options: dict[str, str] = {}
        if rest and rest[0].startswith("["):
            opts = []
            while rest:
                word = rest.pop(0)
                opts.append(word.strip("[]"))
                if word.endswith("]"):
                    break
            for opt in " ".join(opts).split():
                name, _, value = opt.partition("=")
                options[name] = value
        if kind not in ("deb", "deb-src") or len(rest) < 2:
            continue
        out.append(AptSource([kind], [rest[0]], [rest[1]], rest[2:],
                             options.get("signed-by", ""), origin, options))
    return out


def _deb822_sources(text: str, origin: str) -> list[AptSource]:
    out = []
    for stanza in _stanzas(text):
        if stanza.get("enabled", "yes").strip().lower() == "no":
            continue
        if not {"types", "uris", "suites"} <= set(stanza):
            continue
        out.append(AptSource(stanza["types"].split(), stanza["uris"].split(),
                             stanza["suites"].split(), stanza.get("components", "").split(),
                             stanza.get("signed-by", ""), origin))
    return out


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
            continue
        if line[0] in " \t" and key is not None:
            value = line.strip()
            current[key] += "\n" + ("" if value == "." else value)
            continue
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every enabled entry apt itself would read (other file names in sources.list.d are
    ignored by apt, and so here)."""
    out: list[AptSource] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        out += _one_line_sources(main.read_text(), str(main))
    d = etc_apt / "sources.list.d"
    for path in sorted(d.iterdir()) if d.is_dir() else []:
        if path.suffix == ".list":
            out += _one_line_sources(path.read_text(), str(path))
        elif path.suffix == ".sources":
            out += _deb822_sources(path.read_text(), str(path))
    return out


def bookworm_sources(sources: list[AptSource]) -> list[AptSource]:
    """The host's binary bookworm entries (bookworm, -updates, -security, ...)."""
    out = []
    for s in sources:
        suites = [x for x in s.suites if x == SUITE or x.startswith(SUITE + "-")
                  or x.startswith(SUITE + "/")]
        if "deb" in s.types and suites:
            out.append(AptSource(["deb"], s.uris, suites, s.components or ["main"],
                                 s.signed_by, s.origin))
    return out


def mirror(sources: list[AptSource]) -> str:
    """The URI of the host's entry for bookworm itself: where debootstrap fetches from."""
    for s in bookworm_sources(sources):
        if SUITE in s.suites and "main" in s.components:
            for uri in s.uris:
                if uri.startswith(("http://", "https://")):
                    return uri
    raise BaseImageError(
        "the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/) name no "
        f"http(s) mirror for Debian {SUITE} main, which the test images are built from: "
        f"add one (a deb822 entry with 'Suites: {SUITE}' and 'Components: main')")


# -- pip's configuration -------------------------------------------------------------------

def pip_config(env: dict[str, str] | None = None, etc: Path = Path("/etc/pip.conf"),
               xdg: Path = Path("/etc/xdg/pip"), ca_dir: Path = HOST_CA_DIR
               ) -> dict[str, str]:
    """The pip configuration files to put into the image: {path in image: text}. The host's
    /etc/pip.conf gains its PIP_* environment settings, and the system CA bundle when the
    host added certificates and pip was not told about any."""
    env = dict(os.environ) if env is None else env
    files: dict[str, str] = {}
    for path in sorted(xdg.rglob("*")) if xdg.is_dir() else []:
        if path.is_file():
            files["/etc/xdg/pip/" + str(path.relative_to(xdg))] = path.read_text()
    parser = configparser.ConfigParser(interpolation=None)
    if etc.is_file():
        parser.read_string(etc.read_text())
    if not parser.has_section("global"):
        parser.add_section("global")
    for name in PIP_ENV:
        if env.get(name):
            parser.set("global", name[4:].lower().replace("_", "-"), env[name])
    configured_cert = env.get("PIP_CERT") or any(
        parser.has_option(s, "cert") for s in parser.sections())
    if _host_cas(ca_dir) and not configured_cert:
        parser.set("global", "cert", SYSTEM_BUNDLE)
    if env.get("PIP_CERT") and not parser.has_option("global", "cert"):
        # The host's variable names a file on the host; in the image it is the same bundle.
        parser.set("global", "cert", SYSTEM_BUNDLE)
    if parser.items("global") or etc.is_file():
        buf = io.StringIO()
        parser.write(buf)
        files["/etc/pip.conf"] = buf.getvalue()
    return files


def _host_cas(ca_dir: Path = HOST_CA_DIR) -> dict[str, bytes]:
    if not ca_dir.is_dir():
        return {}
    return {str(p.relative_to(ca_dir)): p.read_bytes()
            for p in sorted(ca_dir.rglob("*.crt")) if p.is_file()}


# -- the recipe and its key ---------------------------------------------------------------

@dataclass
class Recipe:
    mirror: str
    apt_sources: str                    # deb822 text for the image
    keyrings: dict[str, bytes]          # Signed-By files the sources need
    cas: dict[str, bytes]
    pip: dict[str, str]

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({
            "recipe": RECIPE, "suite": SUITE, "variant": VARIANT, "include": INCLUDE,
            "venv": VENV, "mirror": self.mirror, "apt_sources": self.apt_sources,
            "keyrings": {k: hashlib.sha256(v).hexdigest() for k, v in self.keyrings.items()},
            "cas": {k: hashlib.sha256(v).hexdigest() for k, v in self.cas.items()},
            "pip": self.pip}, sort_keys=True).encode())
        return h.hexdigest()[:16]


def host_recipe() -> Recipe:
    sources = host_apt_sources()
    uri = mirror(sources)
    entries = bookworm_sources(sources)
    keyrings = {}
    for s in entries:
        if s.signed_by and "\n" not in s.signed_by and s.signed_by.startswith("/"):
            path = Path(s.signed_by)
            if not path.is_file():
                raise BaseImageError(f"{s.origin}: Signed-By {path} does not exist")
            keyrings[str(path)] = path.read_bytes()
    return Recipe(uri, "\n".join(s.deb822() for s in entries), keyrings, _host_cas(),
                  pip_config())


# -- making it ----------------------------------------------------------------------------

def _run(argv: list[str], what: str, timeout: float = 900, log: Path | None = None) -> None:
    try:
        p = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BaseImageError(f"{what}: no end after {timeout:.0f}s") from e
    if log is not None:
        with open(log, "ab") as f:
            f.write(p.stdout + p.stderr)
    if p.returncode != 0:
        tail = (p.stdout + p.stderr).decode(errors="replace").strip().splitlines()[-20:]
        raise BaseImageError(f"{what} failed ({p.returncode}):\n" + "\n".join(tail))


def make_rootfs(recipe: Recipe, rootfs: Path, log: Path | None = None) -> None:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not os.access(debootstrap, os.X_OK):
        raise BaseImageError("no debootstrap: install Debian's debootstrap "
                             "(scripts/bootstrap.sh does)")
    keyring = [f"--keyring={DEFAULT_KEYRING}"] if Path(DEFAULT_KEYRING).is_file() else []
    _run([debootstrap, f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}", *keyring,
          SUITE, str(rootfs), recipe.mirror], f"debootstrap {SUITE} from {recipe.mirror}",
         log=log)

    def put(path: str, data: bytes | str, mode: int = 0o644) -> None:
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)

    for name, data in recipe.cas.items():
        put(str(HOST_CA_DIR / name), data)
    _run(["chroot", str(rootfs), "update-ca-certificates"], "update-ca-certificates", log=log)
    # apt inside builds uses the host's mirrors, not the one debootstrap wrote.
    (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
    put("/etc/apt/sources.list.d/host.sources", recipe.apt_sources)
    for path, data in recipe.keyrings.items():
        if not (rootfs / path.lstrip("/")).exists():
            put(path, data)
    for path, text in recipe.pip.items():
        put(path, text)
    # Services installed by a Dockerfile's apt-get must not try to start at build time.
    put("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)
    _run(["chroot", str(rootfs), "python3", "-m", "venv", VENV], f"python3 -m venv {VENV}",
         log=log)
    # Docker provides these per container; the host's own have no place in an image.
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).unlink(missing_ok=True)
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / d).glob("*"):
            if p.is_file():
                p.unlink()


def import_changes() -> list[str]:
    path = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return ["--change", f"ENV PATH={path}", "--change", "ENV LANG=C.UTF-8",
            "--change", 'CMD ["bash"]']


def ensure_base_image(engine: DockerEngine, cache_dir: Path = CACHE_DIR,
                      log: Path | None = None) -> str:
    """The base image's tag, imported from the cached tarball or made first."""
    recipe = host_recipe()
    key = recipe.key()
    tag = f"{IMAGE}:{key}"
    if engine.image_exists(tag):
        return tag
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"base-{key}.tar"
    with open(cache_dir / ".lock", "w") as lock:
        # Two runs at once make it once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir))
            try:
                rootfs = work / "rootfs"
                make_rootfs(recipe, rootfs, log)
                partial = work / "rootfs.tar"
                _run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf",
                      str(partial), "."], "tar of the root file system", log=log)
                os.replace(partial, tarball)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        started = time.monotonic()
        engine.run("import", *import_changes(), str(tarball), tag, timeout=900)
        if log is not None:
            with open(log, "a") as f:
                f.write(f"imported {tarball} as {tag} in {time.monotonic() - started:.1f}s\n")
    return tag

"""holdscan.lab.baseimage's reading of the host's apt sources and pip settings: what the
test images are built from (the images themselves: tests/cluster/test_compose.py)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from holdscan.lab.baseimage import (
    BaseImageError,
    _deb822_sources,
    bookworm_sources,
    host_apt_sources,
    mirror,
    pip_config,
)

KEY = "/usr/share/keyrings/debian-archive-keyring.gpg"


def etc_apt(tmp_path: Path, main: str = "", **files: str) -> Path:
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if main:
        (d / "sources.list").write_text(main)
    for name, text in files.items():
        (d / "sources.list.d" / name.replace("__", ".")).write_text(text)
    return d


def test_one_line_and_deb822_sources_are_read_as_apt_reads_them(tmp_path: Path) -> None:
    d = etc_apt(
        tmp_path,
        main=("# the archive\n"
              f"deb [arch=amd64 signed-by={KEY}] http://mirror.test/debian bookworm main contrib\n"
              "deb-src http://mirror.test/debian bookworm main\n"),
        extra__list="deb http://other.test/debian bookworm-backports main # comment\n",
        debian__sources=("Types: deb\n# a comment\nURIs: http://mirror.test/debian\n"
                         "Suites: bookworm bookworm-updates\nComponents: main\n"
                         f"Signed-By: {KEY}\n\n"
                         "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\n"
                         "Components: main\nEnabled: no\n"),
        old__list__disabled="deb http://ignored.test/debian bookworm main\n",
    )
    sources = host_apt_sources(d)
    uris = [(s.types, s.uris[0], s.suites) for s in sources]
    assert uris == [
        (["deb"], "http://mirror.test/debian", ["bookworm"]),
        (["deb-src"], "http://mirror.test/debian", ["bookworm"]),
        (["deb"], "http://mirror.test/debian", ["bookworm", "bookworm-updates"]),
        (["deb"], "http://other.test/debian", ["bookworm-backports"]),
    ]
    assert sources[0].signed_by == KEY and sources[0].components == ["main", "contrib"]
    assert mirror(sources) == "http://mirror.test/debian"
    # deb-src is no use to a build; every binary bookworm entry is.
    assert all(s.types == ["deb"] for s in bookworm_sources(sources))
    assert len(bookworm_sources(sources)) == 3


def test_the_image_sources_read_back_the_same(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, debian__sources=(
        "Types: deb\nURIs: http://mirror.test/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"
        " -----END PGP PUBLIC KEY BLOCK-----\n"))
    [src] = host_apt_sources(d)
    assert src.signed_by.splitlines()[1:] == ["-----BEGIN PGP PUBLIC KEY BLOCK-----", "",
                                              "abc", "-----END PGP PUBLIC KEY BLOCK-----"]
    [again] = _deb822_sources(src.deb822(), "image")
    assert (again.uris, again.suites, again.components, again.signed_by) == \
        (src.uris, src.suites, src.components, src.signed_by)


def test_no_bookworm_mirror_is_a_clear_error(tmp_path: Path) -> None:
    d = etc_apt(tmp_path, main="deb http://archive.test/ubuntu jammy main\n")
    with pytest.raises(BaseImageError, match="name no http.s. mirror for Debian bookworm"):
        mirror(host_apt_sources(d))


def test_pip_settings_of_the_host_go_into_the_image(tmp_path: Path) -> None:
    etc = tmp_path / "pip.conf"
    etc.write_text("[global]\ntimeout = 60\n")
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / "pip.conf").write_text("[global]\nconstraint = /etc/xdg/pip/c.txt\n")
    (xdg / "c.txt").write_text("torch<3\n")
    cas = tmp_path / "cas"
    cas.mkdir()
    (cas / "egress.crt").write_text("cert")
    files = pip_config({"PIP_INDEX_URL": "https://pypi.mirror.test/simple",
                        "PIP_FIND_LINKS": "/a/host/path"}, etc, xdg, cas)
    assert files["/etc/xdg/pip/c.txt"] == "torch<3\n"
    assert files["/etc/xdg/pip/pip.conf"].startswith("[global]")
    conf = configparser.ConfigParser()
    conf.read_string(files["/etc/pip.conf"])
    assert dict(conf["global"]) == {
        "timeout": "60", "index-url": "https://pypi.mirror.test/simple",
        # The host added a CA: pip in the image must use the system bundle that has it.
        "cert": "/etc/ssl/certs/ca-certificates.crt"}


def test_no_pip_settings_and_no_cas_give_no_pip_conf(tmp_path: Path) -> None:
    assert pip_config({}, tmp_path / "none", tmp_path / "none", tmp_path / "none") == {}

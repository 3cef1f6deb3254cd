"""The web's privilege separation, against a real Postfix and a running dispatcher.

The web's user can read quarantine metadata and drop requests, nothing else; the
dispatcher carries requests out with the store's crash-safe operations, once, and
refuses (and logs) what another local user forged into the request directory.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatcher import audit
from holdscan.lab.cluster import Cluster
from holdscan.lab.postfix import PostfixInstance
from holdscan.lab.sink import Sink
from shared.webrequest import Request, WebPaths, sign_link
from tests.support.mail import PE, multipart, part, send, simple_message
from tests.support.web import quarantine_message, run_as, spool, web_config, web_user

pytestmark = [pytest.mark.postfix]

NOBODY = 65534


@dataclass
class Site:
    pf: PostfixInstance
    sink: Sink
    cluster: Cluster
    paths: WebPaths
    entries: dict[str, str]
    uid: int
    gid: int

    def submit(self, req: Request) -> None:
        """Drop a request as the web's user does."""
        p = run_as(self.uid, self.gid, textwrap.dedent(f"""
            from pathlib import Path
            from shared.webrequest import Request, WebPaths, submit
            submit(WebPaths(Path({str(self.paths.state_dir)!r})),
                   Request.from_bytes({req.to_bytes()!r}))
            """))
        assert p.returncode == 0, p.stderr

    def result(self, request_id: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while (r := self.paths.result(request_id)) is None:
            assert time.monotonic() < deadline, self.cluster.logs()[-3000:]
            time.sleep(0.1)
        return r

    def wait_gone(self, path: Path, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while path.exists() or path.is_symlink():
            assert time.monotonic() < deadline, self.cluster.logs()[-3000:]
            time.sleep(0.1)


@pytest.fixture(scope="module")
def site(shared_postfix: tuple[PostfixInstance, Sink], tmp_path_factory) -> Iterator[Site]:
    pf, sink = shared_postfix
    _, uid, gid = web_user()
    tmp = tmp_path_factory.mktemp("web")
    os.chmod(tmp, 0o755)
    names = {"release": ("spam", ["a@example.test"]), "delete": ("spam", ["a@example.test"]),
             "forged": ("spam", ["a@example.test"]), "infected": ("infected", ["r@example.test"]),
             "mine": ("spam", ["r@example.test"]), "theirs": ("spam", ["o@example.test"]),
             "elsewhere": ("blocked", ["a@example.test", "b@example.test"])}
    entries = {name: quarantine_message(pf, simple_message(n, subject=name), "s@example.test",
                                        rcpts, action=verdict, subject=name)
               for n, (name, (verdict, rcpts)) in enumerate(names.items())}
    cfg = web_config(tmp / "holdscan.toml", pf, tmp / "webdata")
    cluster = Cluster(cfg, tmp)
    cluster.start_dispatcher("--local", "1")
    paths = WebPaths(spool(pf).state_dir)
    cluster.wait_for(lambda: paths.key.exists() and paths.status.exists(), 30,
                     "the dispatcher's web set-up")
    try:
        yield Site(pf, sink, cluster, paths, entries, uid, gid)
    finally:
        cluster.close()
        pf.wait_empty()


def test_web_user_reads_metadata_but_cannot_write_quarantine_or_spool(site):
    entry = spool(site.pf).quarantine_dir / site.entries["release"]
    sp = spool(site.pf)
    code = textwrap.dedent(f"""
        import json, os
        from pathlib import Path
        entry = Path({str(entry)!r})
        out = {{"meta": json.loads((entry / "meta.json").read_text())["subject"],
               "listed": sorted(os.listdir(entry.parent))}}
        def denied(what, f):
            try:
                f()
            except PermissionError:
                return
            out.setdefault("allowed", []).append(what)
        denied("write meta.json", lambda: open(entry / "meta.json", "a"))
        denied("write queuefile", lambda: open(entry / "queuefile", "r+b"))
        denied("create in entry", lambda: open(entry / "x", "w"))
        denied("rename entry", lambda: os.rename(entry, entry.parent / "y"))
        denied("create in store", lambda: os.mkdir(entry.parent / "z"))
        denied("list hold", lambda: os.listdir({str(sp.hold_dir)!r}))
        denied("create in incoming", lambda: open({str(sp.incoming_dir / 'x')!r}, "w"))
        out["status"] = "pid" in json.loads(open({str(sp.state_dir / 'status.json')!r}).read())
        denied("read journal", lambda: os.listdir({str(sp.journal.dir)!r}))
        denied("list requests", lambda: os.listdir({str(site.paths.requests)!r}))
        denied("write audit", lambda: open({str(site.paths.audit)!r}, "a"))
        denied("write results", lambda: open({str(site.paths.results / 'x.json')!r}, "w"))
        print(json.dumps(out))
        """)
    p = run_as(site.uid, site.gid, code)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["meta"] == "release" and out["status"]        # the statistics page's
    assert site.entries["release"] in out["listed"]
    assert out.get("allowed", []) == []


def test_release_asked_twice_delivers_once_and_is_audited(site):
    entry = site.entries["release"]
    first = Request.new("release", entry, "admin:alice")
    second = Request.new("release", entry, "admin:bob")
    site.submit(first)
    site.submit(second)
    r1, r2 = site.result(first.id), site.result(second.id)
    assert sorted([r1["outcome"], r2["outcome"]]) == ["already", "done"]
    [d] = site.sink.wait_count(1, timeout=30)
    site.pf.wait_empty()
    time.sleep(1)
    assert site.sink.count() == 1 and d.rcpt_tos == ["a@example.test"]
    assert b"Subject: release 0" in d.data
    log = {rec["request"]: rec for rec in audit.tail(site.paths.audit)}
    assert log[first.id]["by"] == "admin:alice" and log[second.id]["by"] == "admin:bob"
    assert abs(log[first.id]["time"] - time.time()) < 60
    meta = json.loads((spool(site.pf).quarantine_dir / entry / "meta.json").read_text())
    assert meta["released_as"] == (r1.get("released_as") or r2.get("released_as"))
    site.sink.clear()


def test_delete_request_removes_the_entry(site):
    entry = site.entries["delete"]
    req = Request.new("delete", entry, "admin:alice")
    site.submit(req)
    assert site.result(req.id)["outcome"] == "done"
    assert not (spool(site.pf).quarantine_dir / entry).exists()
    again = Request.new("delete", entry, "admin:alice")
    site.submit(again)
    r = site.result(again.id)
    assert r["outcome"] == "refused" and "no quarantine entry" in r["detail"]


def test_request_forged_by_another_local_user_is_refused_and_logged(site):
    entry = site.entries["forged"]
    forged = Request.new("release", entry, "admin:alice")
    # Another local user in the web's group (so it may write into the directory).
    code = textwrap.dedent(f"""
        from pathlib import Path
        Path({str(site.paths.requests / forged.id)!r}).write_bytes({forged.to_bytes()!r})
        """)
    p = run_as(NOBODY, NOBODY, code, groups=(site.gid,))
    assert p.returncode == 0, p.stderr
    site.wait_gone(site.paths.requests / forged.id)
    time.sleep(0.5)
    assert site.paths.result(forged.id) is None        # nothing the web reads as its own
    [rec] = [r for r in audit.tail(site.paths.audit) if r["request"] == forged.id]
    assert rec["outcome"] == "refused" and rec["uid"] == NOBODY and "forged" in rec["detail"]
    assert "web request refused" in site.cluster.logs("dispatcher")
    meta = json.loads((spool(site.pf).quarantine_dir / entry / "meta.json").read_text())
    assert "released_as" not in meta


def test_hostile_request_files_are_refused(site):
    entry = site.entries["forged"]
    good = Request.new("release", entry, "admin:alice")
    cases = {
        "a" * 32: b"{" * 10000,                                    # too large
        "b" * 32: b"not json",
        "c" * 32: json.dumps({"v": 1, "id": "c" * 32, "action": "release", "entry": entry,
                              "by": "admin:x", "time": 1, "to": "", "link": "",
                              "shell": "rm -rf /"}).encode(),       # unknown field
        "d" * 32: good.to_bytes(),                                 # name is not its ID
    }
    code = "from pathlib import Path\nimport os\n" + "".join(
        f"Path({str(site.paths.requests / n)!r}).write_bytes({data!r})\n"
        for n, data in cases.items())
    # and a symbolic link to a file the web may not read
    code += (f"os.symlink('/etc/shadow', {str(site.paths.requests / ('e' * 32))!r})\n")
    p = run_as(site.uid, site.gid, code)
    assert p.returncode == 0, p.stderr
    for n in [*cases, "e" * 32]:
        site.wait_gone(site.paths.requests / n)
    refused = {r["request"]: r["detail"] for r in audit.tail(site.paths.audit)
               if r.get("outcome") == "refused"}
    assert "larger than" in refused["a" * 32]
    assert "not a JSON" in refused["b" * 32]
    assert "unknown field" in refused["c" * 32]
    assert "name is not its request ID" in refused["d" * 32]
    assert "symbolic link" in refused["e" * 32]
    meta = json.loads((spool(site.pf).quarantine_dir / entry / "meta.json").read_text())
    assert "released_as" not in meta


def test_recipient_requests_need_their_own_valid_link(site):
    key = site.paths.key.read_bytes()
    later = time.time() + 3600
    mine, theirs, infected = (site.entries[n] for n in ("mine", "theirs", "infected"))

    def ask(entry: str, link: str, action: str = "release") -> dict:
        req = Request.new(action, entry, "recipient:r@example.test", link=link)
        site.submit(req)
        return site.result(req.id)

    # a link for my entry does not open another recipient's
    r = ask(theirs, sign_link(key, "r@example.test", mine, later))
    assert r["outcome"] == "refused" and "another recipient or entry" in r["detail"]
    # a link for their entry, but in my name: I am not its recipient
    r = ask(theirs, sign_link(key, "r@example.test", theirs, later))
    assert r["outcome"] == "refused" and "not a recipient" in r["detail"]
    r = ask(mine, sign_link(key, "r@example.test", mine, time.time() - 1))
    assert r["outcome"] == "refused" and "expired" in r["detail"]
    r = ask(mine, sign_link(b"another key" * 3, "r@example.test", mine, later))
    assert r["outcome"] == "refused" and "signature" in r["detail"]
    r = ask(infected, sign_link(key, "r@example.test", infected, later))
    assert r["outcome"] == "refused" and "may not release infected" in r["detail"]
    r = ask(mine, sign_link(key, "r@example.test", mine, later))
    assert r["outcome"] == "done", r
    [d] = site.sink.wait_count(1, timeout=30)
    assert d.rcpt_tos == ["r@example.test"]
    site.pf.wait_empty()
    site.sink.clear()


def test_release_to_another_address(site):
    req = Request.new("release", site.entries["elsewhere"], "admin:alice",
                      to="helpdesk@example.test")
    site.submit(req)
    assert site.result(req.id)["outcome"] == "done"
    [d] = site.sink.wait_count(1, timeout=30)
    assert d.rcpt_tos == ["helpdesk@example.test"]
    site.pf.wait_empty()
    site.sink.clear()


def test_entry_the_dispatcher_quarantines_is_shared_with_the_web(site):
    store = spool(site.pf).quarantine_dir
    before = set(os.listdir(store))
    # the attachments scanner blocks a Windows program; the policy quarantines it
    send(site.pf.port, "s@example.test", ["a@example.test"],
         multipart(part(b"hi", "text/plain", encoding="7bit"), part(PE, name="setup.exe")))
    deadline = time.monotonic() + 30
    while not (new := {n for n in os.listdir(store) if not n.startswith(".")} - before):
        assert time.monotonic() < deadline, site.cluster.logs()[-3000:]
        time.sleep(0.1)
    [entry] = new
    entry_dir = store / entry
    for p, mode in ((entry_dir, 0o750), (entry_dir / "meta.json", 0o640),
                    (entry_dir / "queuefile", 0o640)):
        st = p.stat()
        assert (st.st_gid, st.st_mode & 0o7777) == (site.gid, mode), p
        assert st.st_uid != site.uid
    code = (f"import json; print(json.load(open({str(entry_dir / 'meta.json')!r}))['action']);"
            f"open({str(entry_dir / 'queuefile')!r}, 'rb').read()")
    p = run_as(site.uid, site.gid, code)
    assert p.returncode == 0 and p.stdout.strip() == "blocked", p.stderr

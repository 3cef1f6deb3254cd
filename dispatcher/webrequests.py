"""The web's requests, carried out by the dispatcher.

The web process runs as its own user (web.user), in web.group, and can neither
write the quarantine nor touch Postfix's spool. prepare() (as root, at the
dispatcher's start) lays out what it may use (shared/webrequest.WebPaths): read
the quarantine entries, drop requests into STATE/webrequests (1730, like
Postfix's maildrop), read outcomes and the audit log in STATE/web.

Each request file is hostile input. It is refused, logged and removed unless
it is a regular file with one link owned by web.user (a file another local
user forged into the directory is refused by its owner), at most MAX_SIZE
bytes, a valid request (shared/webrequest.py) named by its ID, for an entry
that exists, from a requester who may do it (a recipient: with a valid link
for that entry, for mail of theirs whose verdict web.recipient_release allows).

Carrying one out:  release/delete through QuarantineStore (crash-safe, and a
                   second release finds the first: delivered once)
                   -> results/ID.json (the commit: a replayed request with a
                   result is only removed) -> audit line -> unlink the request
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher import audit, durable
from dispatcher.quarantine import QuarantineError, QuarantineStore, entries, share
from dispatcher.spool import Spool
from shared.config import Config, ConfigError, WebConfig
from shared.logging import event
from shared.webrequest import MAX_SIZE, LinkError, Request, RequestError, WebPaths, verify_link

log = logging.getLogger("holdscan.dispatcher")

RESULTS_KEPT = 7 * 86400
PER_TICK = 20               # requests carried out per look, so that mail keeps flowing
_STALE_TMP = 3600           # a dot file the web never renamed: removed after an hour


@dataclass(frozen=True)
class WebIdentity:
    uid: int
    gid: int            # web.group's


def identity(web: WebConfig) -> WebIdentity:
    try:
        uid = pwd.getpwnam(web.user).pw_uid
    except KeyError:
        raise ConfigError(f"web.user {web.user!r} is not a user on this host; create it "
                          f"(useradd --system --no-create-home --shell /usr/sbin/nologin "
                          f"{web.user}) or set web.enabled = false") from None
    try:
        gid = grp.getgrnam(web.group).gr_gid
    except KeyError:
        raise ConfigError(f"web.group {web.group!r} is not a group on this host; create it "
                          "(groupadd --system NAME) or set web.enabled = false") from None
    return WebIdentity(uid, gid)


def prepare(spool: Spool, web: WebConfig) -> WebIdentity:
    """As root: the directories, modes and key the web and the dispatcher share, and
    every stored quarantine entry shared with web.group. Returns the web's identity."""
    who = identity(web)
    paths = WebPaths(spool.state_dir)
    uid, _ = spool.owner
    if os.geteuid() != 0:
        raise ConfigError("web.enabled: the dispatcher must start as root to set up the "
                          "web's directories (it then becomes mail_owner)")
    # The web passes through the state directory and reads the quarantine; nothing more.
    for d, mode in ((spool.state_dir, 0o710), (spool.quarantine_dir, 0o750)):
        os.chown(d, uid, who.gid)
        os.chmod(d, mode)
    for d, mode in ((paths.requests, 0o1730), (paths.shared, 0o2750),
                    (paths.results, 0o2750)):
        durable.make_dirs(d, 0o700)
        os.chown(d, uid, who.gid)
        os.chmod(d, mode)
    if not paths.key.exists():
        durable.write_file(paths.key, secrets.token_bytes(32), mode=0o640,
                           owner=(uid, who.gid))
    os.chown(paths.key, uid, who.gid)
    os.chmod(paths.key, 0o640)
    if paths.audit.exists():
        os.chown(paths.audit, uid, who.gid)
    for e in entries(spool.quarantine_dir):
        share(e.path, who.gid)
    return who


class WebRequests:
    """The dispatcher's side of the web: requests, outcomes, the audit log and
    (dispatcher/digest.py) the recipients' digests. tick() from the loop."""

    def __init__(self, spool: Spool, cfg: Config, who: WebIdentity | None = None) -> None:
        self.spool = spool
        self.cfg = cfg
        self.web = cfg.web
        self.who = who or identity(cfg.web)
        self.paths = WebPaths(spool.state_dir)
        self.store = QuarantineStore(spool)
        self.next_look = 0.0
        self.next_cleanup = 0.0
        self.digest = None
        if self.web.digest:
            from dispatcher.digest import Digest
            self.digest = Digest(spool, cfg, self.paths)

    def tick(self, now: float) -> None:
        """Called every loop turn with the monotonic clock; does its work at its own pace."""
        if now >= self.next_look:
            self.next_look = now + 0.25
            try:
                self.process()
            except OSError as e:
                event(log, logging.ERROR, "cannot read the web's requests", error=str(e))
        if now >= self.next_cleanup:
            self.next_cleanup = now + 3600
            self._cleanup()
        if self.digest is not None:
            self.digest.tick()

    # -- requests ---------------------------------------------------------------------------
    def process(self, limit: int = PER_TICK) -> list[dict[str, Any]]:
        """Carry out (or refuse) up to `limit` waiting requests, oldest names first (the
        rest at the next look). Returns their outcomes."""
        done: list[dict[str, Any]] = []
        try:
            names = sorted(os.listdir(self.paths.requests))
        except FileNotFoundError:
            return done
        for name in names:
            if len(done) >= limit:
                break
            path = self.paths.requests / name
            if name.startswith("."):
                self._stale(path)
                continue
            done.append(self._one(path))
        return done

    def _one(self, path: Path) -> dict[str, Any]:
        req: Request | None = None
        st: os.stat_result | None = None
        try:
            data, st = self._read(path)
            parsed = Request.from_bytes(data)
            if parsed.id != path.name:
                raise RequestError("the file's name is not its request ID")
            req = parsed
        except RequestError as e:
            if st is None:
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    pass
            return self._refuse(path, req, st, str(e))
        prior = self.paths.result(req.id)
        if prior is not None:           # carried out before a crash; only the file was left
            path.unlink(missing_ok=True)
            return prior
        try:
            outcome = self._carry_out(req)
        except (QuarantineError, RequestError, LinkError) as e:
            return self._refuse(path, req, st, str(e))
        except OSError as e:
            outcome = {"outcome": "failed", "detail": f"{type(e).__name__}: {e}"}
            event(log, logging.ERROR, "web request failed", request=req.id, entry=req.entry,
                  action=req.action, error=str(e))
        return self._finish(path, req, outcome)

    def _read(self, path: Path) -> tuple[bytes, os.stat_result]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise RequestError(f"cannot open it ({e.strerror}: a symbolic link, or not a "
                               "regular file)") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise RequestError("not a regular file")
            if st.st_uid != self.who.uid:
                raise RequestError(f"owned by uid {st.st_uid}, not by the web's user "
                                   f"{self.web.user} (uid {self.who.uid}): forged by another "
                                   "local user")
            if st.st_nlink != 1:
                raise RequestError("has more than one link")
            if st.st_size > MAX_SIZE:
                raise RequestError(f"larger than {MAX_SIZE} bytes")
            return os.read(fd, MAX_SIZE + 1), st
        finally:
            os.close(fd)

    def _carry_out(self, req: Request) -> dict[str, Any]:
        e = self.store.get(req.entry)          # QuarantineError: no such entry
        to = req.to
        if req.recipient:
            to = self._recipient_may(req, e.meta)
        if req.action == "delete":
            self.store.delete(req.entry)
            return {"outcome": "done", "detail": "deleted"}
        r = self.store.release(req.entry, to=to)
        if r.already:
            return {"outcome": "already", "released_as": r.new_queue_id,
                    "detail": f"released already as {r.new_queue_id} to "
                              f"{', '.join(r.recipients)}; nothing done"}
        return {"outcome": "done", "released_as": r.new_queue_id,
                "detail": f"released as {r.new_queue_id} to {', '.join(r.recipients)}"}

    def _recipient_may(self, req: Request, meta: dict[str, Any]) -> str:
        """Check a recipient's request against its link and the policy; the address a
        release goes to ("" for the entry's own recipients)."""
        key = self.paths.key.read_bytes()
        link = verify_link(key, req.link)
        if link.recipient.lower() != req.recipient.lower() or link.entry != req.entry:
            raise RequestError("the link is for another recipient or entry")
        recipients = [str(r) for r in meta.get("recipients", [])]
        if req.recipient.lower() not in (r.lower() for r in recipients):
            raise RequestError(f"{req.recipient} is not a recipient of {req.entry}")
        sole = len(recipients) == 1
        if req.action == "delete":
            if not sole:
                raise RequestError(f"{req.entry} has other recipients; only an administrator "
                                   "may delete it")
            return ""
        verdict = str(meta.get("action", ""))
        if verdict not in self.web.recipient_release:
            raise RequestError(f"a recipient may not release {verdict or 'this'} mail "
                               "(web.recipient_release); ask the administrator")
        return "" if sole else req.recipient

    def _refuse(self, path: Path, req: Request | None, st: os.stat_result | None,
                why: str) -> dict[str, Any]:
        event(log, logging.WARNING, "web request refused", file=path.name, why=why,
              uid=st.st_uid if st else "", by=req.by if req else "")
        outcome = {"outcome": "refused", "detail": why}
        if st is not None and st.st_uid != self.who.uid:
            outcome["uid"] = st.st_uid
        if req is None or st is None or st.st_uid != self.who.uid:
            # Not the web's: nothing goes where the web reads results as its own.
            audit.append(self.paths.audit, {"time": time.time(), "request": path.name[:64],
                                            "by": f"uid {st.st_uid}" if st else "?",
                                            "action": "", "entry": "", **outcome})
            path.unlink(missing_ok=True)
            return outcome
        return self._finish(path, req, outcome)

    def _finish(self, path: Path, req: Request, outcome: dict[str, Any]) -> dict[str, Any]:
        record = {"request": req.id, "time": time.time(), "asked": req.time, "by": req.by,
                  "action": req.action, "entry": req.entry, "to": req.to, **outcome}
        result = self.paths.results / f"{req.id}.json"
        durable.write_file(result, json.dumps(record).encode(), mode=0o640)
        os.chmod(result, 0o640)
        audit.append(self.paths.audit, record)
        path.unlink(missing_ok=True)
        event(log, logging.INFO, "web request", request=req.id, by=req.by, action=req.action,
              entry=req.entry, outcome=outcome["outcome"], detail=outcome.get("detail", ""))
        return record

    def _stale(self, path: Path) -> None:
        try:
            if time.time() - path.lstat().st_mtime > _STALE_TMP:
                path.unlink()
        except FileNotFoundError:
            pass

    # -- upkeep -----------------------------------------------------------------------------
    def _cleanup(self) -> None:
        cutoff = time.time() - RESULTS_KEPT
        try:
            for p in self.paths.results.iterdir():
                if p.stat().st_mtime < cutoff:
                    p.unlink(missing_ok=True)
        except OSError as e:
            event(log, logging.WARNING, "cannot clean old web results", error=str(e))


__all__ = ["WebIdentity", "WebRequests", "identity", "prepare"]

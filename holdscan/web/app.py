"""`holdscan web`: the quarantine in a browser, for administrators and recipients.

A server-rendered Flask application. It runs as its own user (web.user) and can only
read: the quarantine's entries (shared with web.group by the dispatcher), the results
and the audit log in STATE/web, the dispatcher's status. Every release or delete is a
request file the dispatcher carries out (dispatcher/webrequests.py); the pages show its
outcome when it comes.

Pages: /login, /quarantine (filters, paging, bulk), /quarantine/ID (detail, release,
delete), /requests (outcomes), /audit, /stats; /r/TOKEN for a recipient's signed link.
Every response carries a Content-Security-Policy that allows no script at all and
styles only from /static; every form carries a CSRF token; the session cookie is
HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for

from dispatcher import audit
from dispatcher.quarantine import QuarantineError, parse_since
from holdscan.web import chart
from holdscan.web.auth import NAME_RE, Admins, LoginLimiter
from holdscan.web.index import Filters, Index
from holdscan.web.message import preview, visible
from shared.config import Config
from shared.webrequest import (
    ADDRESS_RE,
    ENTRY_RE,
    LinkError,
    Request,
    WebPaths,
    submit,
    verify_link,
)

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
STATS_DAYS = 7
_LOCAL_PATH = re.compile(r"/[A-Za-z0-9/_.-]*")
_REQ_KEPT = 50          # request IDs a session remembers to show their outcomes


class Web:
    """What the pages need: configuration, paths, the index, logins."""

    def __init__(self, cfg: Config, state_dir: Path, quarantine_dir: Path,
                 data_dir: Path) -> None:
        self.cfg = cfg
        self.web = cfg.web
        self.paths = WebPaths(state_dir)
        self.quarantine_dir = quarantine_dir
        self.data_dir = data_dir
        self.index = Index(data_dir / "index.sqlite", quarantine_dir)
        self.admins = Admins(data_dir / "admins")
        self.limiter = LoginLimiter(cfg.web.login_attempts)
        self.stop = threading.Event()

    def session_key(self) -> bytes:
        path = self.data_dir / "session.key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
            return key

    def link_key(self) -> bytes:
        return self.paths.key.read_bytes()

    def meta(self, entry_id: str) -> dict[str, Any] | None:
        if not ENTRY_RE.fullmatch(entry_id):
            return None
        try:
            meta = json.loads((self.quarantine_dir / entry_id / "meta.json").read_bytes())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def start_refresher(self, interval: float) -> None:
        threading.Thread(target=self.index.run, args=(interval, self.stop), daemon=True,
                         name="index").start()


def create_app(cfg: Config, state_dir: Path, quarantine_dir: Path, data_dir: Path,
               refresh_interval: float = 2.0) -> Flask:
    web = Web(cfg, state_dir, quarantine_dir, data_dir)
    web.index.refresh(full=True)
    if refresh_interval > 0:
        web.start_refresher(refresh_interval)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=web.session_key(), SESSION_COOKIE_NAME="holdscan_session",
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=cfg.web.cookie_secure, MAX_CONTENT_LENGTH=256 * 1024,
        PERMANENT_SESSION_LIFETIME=int(cfg.web.session_hours * 3600))
    app.extensions["holdscan"] = web
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["visible"] = visible
    app.jinja_env.globals["csrf_token"] = _csrf_token
    _routes(app, web)
    return app


# -- helpers -----------------------------------------------------------------------------------

def _when(t: Any) -> str:
    try:
        return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return str(session["csrf"])


def _client() -> str:
    return request.remote_addr or "?"


def _remember(key: str, request_id: str) -> None:
    ids = [i for i in session.get(key, []) if isinstance(i, str)][-(_REQ_KEPT - 1):]
    session[key] = [*ids, request_id]


def _routes(app: Flask, web: Web) -> None:
    cfg = web.web

    def admin() -> str | None:
        if cfg.auth == "header":
            name = request.headers.get(cfg.auth_header, "")
            if _client() in cfg.trusted_proxies and NAME_RE.fullmatch(name):
                return name
            return None
        name = session.get("user")
        since = session.get("since", 0)
        if isinstance(name, str) and isinstance(since, (int, float)) \
                and time.time() - since < cfg.session_hours * 3600:
            return name
        return None

    def admin_only(view):
        @wraps(view)
        def wrapped(*args, **kwargs):
            g.admin = admin()
            if g.admin is None:
                if cfg.auth == "header":
                    abort(403)
                return redirect(url_for("login", next=request.path))
            return view(*args, **kwargs)
        return wrapped

    @app.before_request
    def check_csrf() -> None:
        if request.method == "POST":
            given = request.form.get("csrf", "")
            want = session.get("csrf", "")
            if not want or not isinstance(want, str) or \
                    not secrets.compare_digest(given.encode(), want.encode()):
                abort(400, "The form was stale or forged (no valid CSRF token): reload the "
                           "page and try again.")

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if not request.path.startswith("/static/"):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(400)
    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(405)
    @app.errorhandler(413)
    @app.errorhandler(429)
    def error(e):
        return render_template("error.html", code=e.code, message=e.description), e.code

    # -- administrators ------------------------------------------------------------------
    @app.get("/")
    def home():
        return redirect(url_for("listing"))

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if cfg.auth == "header":
            return redirect(url_for("listing"))
        message = ""
        status = 200
        if request.method == "POST":
            name = request.form.get("name", "")[:100]
            password = request.form.get("password", "")[:1024]
            wait = web.limiter.blocked(_client(), name)
            if wait:
                message = (f"Too many failed logins; try again in {int(wait) + 1} seconds.")
                status = 429
            elif web.admins.check(name, password):
                session.clear()
                session.permanent = True
                session.update(user=name, since=time.time(), csrf=secrets.token_urlsafe(32))
                # Only a path of this site: "//host" or "/\\host" would leave it.
                target = request.args.get("next", "")
                ok = _LOCAL_PATH.fullmatch(target) and not target.startswith("//")
                return redirect(target if ok else url_for("listing"))
            else:
                web.limiter.failed(_client(), name)
                message = "Wrong name or password."
                status = 403
        return render_template("login.html", message=message), status

    @app.post("/logout")
    def logout():
        session.clear()
        return redirect(url_for("login"))

    @app.get("/quarantine")
    @admin_only
    def listing():
        a = request.args
        error = ""
        f = Filters(verdict=a.get("verdict", "")[:50], sender=a.get("sender", "")[:200],
                    recipient=a.get("recipient", "")[:200], text=a.get("q", "")[:200])
        try:
            if a.get("since"):
                f.since = parse_since(a["since"])
            if a.get("until"):
                f.until = parse_since(a["until"])
        except QuarantineError as e:
            error = str(e).replace("--since", "a time")
        try:
            number = int(a.get("page", "1"))
        except ValueError:
            number = 1
        page = web.index.page(f, number, cfg.page_size)
        query = {k: v for k, v in a.items() if k != "page" and v}
        return render_template("list.html", page=page, args=a, error=error, query=query)

    @app.post("/quarantine/bulk")
    @admin_only
    def bulk():
        action = request.form.get("action", "")
        ids = [i for i in request.form.getlist("id") if ENTRY_RE.fullmatch(i)][:_REQ_KEPT]
        if action not in ("release", "delete") or not ids:
            abort(400, "Choose one or more entries, and release or delete.")
        made = []
        for entry in ids:
            req = Request.new(action, entry, f"admin:{g.admin}")
            submit(web.paths, req)
            _remember("reqs", req.id)
            made.append(req.id)
        return redirect(url_for("requests_page", id=made))

    @app.get("/quarantine/<entry_id>")
    @admin_only
    def detail(entry_id: str):
        meta = web.meta(entry_id)
        if meta is None:
            abort(404, "No such entry in the quarantine (released and expired, or deleted).")
        try:
            shown = preview(web.quarantine_dir / entry_id / "queuefile")
            problem = ""
        except (OSError, ValueError) as e:
            shown, problem = None, f"{type(e).__name__}: {e}"
        verdict = meta.get("verdict") if isinstance(meta.get("verdict"), dict) else {}
        findings = [f for f in verdict.get("findings", []) if isinstance(f, dict)]
        return render_template("detail.html", id=entry_id, meta=meta, m=shown,
                               problem=problem, findings=findings)

    @app.post("/quarantine/<entry_id>/<action>")
    @admin_only
    def act(entry_id: str, action: str):
        if action not in ("release", "delete") or not ENTRY_RE.fullmatch(entry_id):
            abort(404)
        to = request.form.get("to", "").strip() if action == "release" else ""
        if to and not ADDRESS_RE.fullmatch(to):
            abort(400, "Give one plain address, like user@example.com.")
        req = Request.new(action, entry_id, f"admin:{g.admin}", to=to)
        submit(web.paths, req)
        _remember("reqs", req.id)
        return redirect(url_for("requests_page", id=[req.id]))

    @app.get("/requests")
    @admin_only
    def requests_page():
        mine = set(session.get("reqs", []))
        ids = [i for i in request.args.getlist("id") if i in mine]
        rows = [(i, web.paths.result(i)) for i in ids]
        pending = any(r is None for _, r in rows)
        for _, r in rows:
            if r is not None and ENTRY_RE.fullmatch(str(r.get("entry", ""))):
                web.index.refresh_entry(str(r["entry"]))
        return render_template("requests.html", rows=rows, pending=pending)

    @app.get("/audit")
    @admin_only
    def audit_page():
        return render_template("audit.html", rows=audit.tail(web.paths.audit, 500))

    @app.get("/stats")
    @admin_only
    def stats():
        now = time.time()
        counts = web.index.per_hour(now - STATS_DAYS * 86400)
        try:
            status = json.loads(web.paths.status.read_bytes())
        except (OSError, ValueError):
            status = {}
        workers = status.get("workers_seen", {}) if isinstance(status, dict) else {}
        return render_template("stats.html", chart=chart.hourly(counts, now, STATS_DAYS),
                               status=status, workers=workers, now=now,
                               entries=web.index.count(), days=STATS_DAYS)

    # -- recipients, through a signed link ----------------------------------------------
    def link_entry(token: str) -> tuple[Any, dict[str, Any]]:
        try:
            link = verify_link(web.link_key(), token)
        except LinkError as e:
            abort(403, f"This link does not work: {e}.")
        meta = web.meta(link.entry)
        if meta is None:
            abort(404, "This message is no longer in the quarantine.")
        rcpts = [str(r).lower() for r in meta.get("recipients", [])]
        if link.recipient.lower() not in rcpts:
            abort(403, "This link does not work: it is not for this message.")
        return link, meta

    def may(link: Any, meta: dict[str, Any]) -> dict[str, bool]:
        released = bool(meta.get("released_as"))
        return {"release": not released and meta.get("action") in cfg.recipient_release,
                "delete": len(meta.get("recipients", [])) == 1}

    @app.get("/r/<token>")
    def recipient(token: str):
        link, meta = link_entry(token)
        rid = request.args.get("req", "")
        result = None
        pending = False
        if rid and rid in session.get("rreqs", []):
            result = web.paths.result(rid)
            pending = result is None
        return render_template("recipient.html", token=token, link=link, meta=meta,
                               may=may(link, meta), result=result, pending=pending)

    @app.post("/r/<token>/<action>")
    def recipient_act(token: str, action: str):
        link, meta = link_entry(token)
        if action not in ("release", "delete") or not may(link, meta)[action]:
            abort(403, "You may not do that with this message; ask your administrator.")
        req = Request.new(action, link.entry, f"recipient:{link.recipient}", link=token)
        submit(web.paths, req)
        _remember("rreqs", req.id)
        return redirect(url_for("recipient", token=token, req=req.id))

    @app.get("/health")
    def health():
        return {"ok": True}


__all__ = ["CSP", "Web", "create_app"]

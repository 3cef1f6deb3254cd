"""Starting `holdscan web`: its own directory, its own user, then the server.

Started as root (by systemd or compose), it makes web.data_dir for web.user and becomes
that user, keeping only web.group, before it reads anything: from then on it can read the
quarantine's shared metadata and drop requests, and nothing else of the spool.
"""

from __future__ import annotations

import logging
import os
import pwd
from pathlib import Path

from shared.config import Config, ConfigError

log = logging.getLogger("holdscan.web")


def become_web_user(cfg: Config, mail_owner: str) -> Path:
    """As root: make data_dir, drop to web.user in web.group. As anyone else: check that
    it is not Postfix's mail_owner. Returns data_dir."""
    from dispatcher.webrequests import identity
    from holdscan.privileges import drop_privileges
    data_dir = Path(cfg.web.data_dir)
    who = identity(cfg.web)
    if os.geteuid() == 0:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(data_dir, who.uid, pwd.getpwuid(who.uid).pw_gid)
        os.chmod(data_dir, 0o700)
        drop_privileges(cfg.web.user, [who.gid])
    elif pwd.getpwuid(os.geteuid()).pw_name == mail_owner:
        raise ConfigError(f"holdscan web must not run as Postfix's mail_owner {mail_owner}: "
                          f"start it as root (it becomes {cfg.web.user}) or as {cfg.web.user}")
    if os.geteuid() == 0:
        raise ConfigError("holdscan web would still be root; check web.user")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"web.data_dir {data_dir} is not writable by uid {os.geteuid()}: "
                          f"chown it to {cfg.web.user}, or start holdscan web as root")
    return data_dir


def serve(cfg: Config, state_dir: Path, quarantine_dir: Path, data_dir: Path) -> int:
    import waitress

    from holdscan.web.app import create_app
    from shared.webrequest import WebPaths
    paths = WebPaths(state_dir)
    if not os.access(paths.requests, os.W_OK | os.X_OK):
        raise ConfigError(f"{paths.requests} is missing or not writable for {cfg.web.user}: "
                          "set web.enabled = true for the dispatcher and restart it (it sets "
                          "the directory up at its start)")
    app = create_app(cfg, state_dir, quarantine_dir, data_dir)
    host, _, port = cfg.web.listen.rpartition(":")
    log.info("holdscan web on http://%s:%s/", host, port)
    print(f"holdscan web: listening on http://{cfg.web.listen}/ as "
          f"{pwd.getpwuid(os.geteuid()).pw_name}", flush=True)
    waitress.serve(app, host=host.strip("[]"), port=int(port), threads=8, ident="holdscan",
                   _quiet=True)
    return 0

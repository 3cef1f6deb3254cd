"""The Postfix settings holdscan needs, read from the running Postfix with `postconf -h`."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class PostfixError(RuntimeError):
    """Postfix is missing or its settings cannot be read."""


@dataclass(frozen=True)
class PostfixSettings:
    queue_directory: Path
    mail_owner: str
    long_queue_ids: bool
    hash_queue_names: frozenset[str]
    hash_queue_depth: int
    line_length_limit: int
    config_directory: str = ""

    @classmethod
    def read(cls, config_directory: str = "", **overrides: object) -> PostfixSettings:
        """Ask postconf; any keyword given here wins over what Postfix says."""
        names = ["queue_directory", "mail_owner", "enable_long_queue_ids", "hash_queue_names",
                 "hash_queue_depth", "line_length_limit"]
        values = postconf(names, config_directory)
        settings = cls(
            queue_directory=Path(values["queue_directory"]),
            mail_owner=values["mail_owner"],
            long_queue_ids=values["enable_long_queue_ids"].lower() == "yes",
            hash_queue_names=frozenset(values["hash_queue_names"].replace(",", " ").split()),
            hash_queue_depth=int(values["hash_queue_depth"]),
            line_length_limit=int(values["line_length_limit"]),
            config_directory=config_directory,
        )
        overrides = {k: v for k, v in overrides.items() if v not in (None, "")}
        if "queue_directory" in overrides:
            overrides["queue_directory"] = Path(str(overrides["queue_directory"]))
        return cls(**{**settings.__dict__, **overrides})  # type: ignore[arg-type]


def postconf(names: list[str], config_directory: str = "") -> dict[str, str]:
    if shutil.which("postconf") is None:
        raise PostfixError("postconf not found: install Postfix (apt-get install postfix), "
                           "or run holdscan on the mail host")
    argv = ["postconf"] + (["-c", config_directory] if config_directory else []) + ["-h"] + names
    p = subprocess.run(argv, check=False, capture_output=True, text=True)
    if p.returncode != 0:
        raise PostfixError(f"postconf failed: {p.stderr.strip()}; check the Postfix configuration"
                           + (f" in {config_directory}" if config_directory else ""))
    lines = p.stdout.splitlines()
    if len(lines) != len(names):
        raise PostfixError(f"postconf printed {len(lines)} values for {len(names)} settings")
    return dict(zip(names, (line.strip() for line in lines), strict=True))

"""The scanners, registered in one place.

Adding a scanner is one new module with a Scanner subclass (see base.py) and
one line in SCANNERS. Its `[scanners.NAME]` table in the configuration goes to
its __init__; every table may say `enabled = true/false`. A scanner that
needs a service only the operator can name (spam: which daemon) is off by
default and turned on by its table alone.
"""

from __future__ import annotations

from shared.config import Config, ConfigError
from workers.scanners.archives import ArchivesScanner
from workers.scanners.attachments import AttachmentsScanner
from workers.scanners.base import Scanner
from workers.scanners.clamav import ClamavScanner
from workers.scanners.macros import MacrosScanner
from workers.scanners.mime import MimeScanner
from workers.scanners.smuggling import SmugglingScanner
from workers.scanners.spam import SpamScanner

# In the order they run. The verdict does not depend on it, except that content one
# scanner finds inside parts (ScanResult.derived) is seen only by those after it.
SCANNERS: dict[str, type[Scanner]] = {
    "mime": MimeScanner,
    "smuggling": SmugglingScanner,
    "attachments": AttachmentsScanner,
    "archives": ArchivesScanner,
    "macros": MacrosScanner,
    "clamav": ClamavScanner,
    "spam": SpamScanner,
}

ENABLED_BY_DEFAULT = frozenset({"mime", "smuggling", "attachments", "archives", "macros",
                                "clamav"})
# Enabled when their [scanners.NAME] table exists, unless it says enabled = false.
ENABLED_WHEN_CONFIGURED = frozenset({"spam"})

__all__ = ["ENABLED_BY_DEFAULT", "ENABLED_WHEN_CONFIGURED", "SCANNERS", "Scanner",
           "build_scanners"]


def build_scanners(cfg: Config) -> list[Scanner]:
    """One instance of every enabled scanner, configured from cfg.scanners."""
    unknown = sorted(set(cfg.scanners) - set(SCANNERS))
    if unknown:
        raise ConfigError(f"[scanners.{unknown[0]}]: no such scanner; known: "
                          f"{', '.join(SCANNERS)}")
    scanners: list[Scanner] = []
    for name, cls in SCANNERS.items():
        table = dict(cfg.scanners.get(name, {}))
        enabled = table.pop("enabled", name in ENABLED_BY_DEFAULT or (
            name in ENABLED_WHEN_CONFIGURED and name in cfg.scanners))
        if not isinstance(enabled, bool):
            raise ConfigError(f"[scanners.{name}]: enabled must be true or false, got {enabled!r}")
        if enabled:
            scanners.append(cls(table))
    for scanner in scanners:
        if isinstance(scanner, ClamavScanner):
            # clamd's answers are shared through the content store the workers use anyway.
            scanner.use_cache(lambda: cfg.content_store(socket_timeout=2.0,
                                                        socket_connect_timeout=1.0))
    return scanners

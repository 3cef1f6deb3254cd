"""`holdscan check` warns about every other source of HOLD in a real Postfix's configuration.

A lab Postfix holds with holdscan's own rule only: no warning. The same Postfix with
another HOLD rule in header_checks, an access map and a master.cf `-o` restriction
that answer HOLD, and milter_default_action = quarantine: one warn line for each,
saying that holdscan will scan and release such mail like new mail; the check
still passes (warn is no failure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from holdscan.lab.cluster import lab_config
from holdscan.lab.postfix import PostfixInstance, run
from holdscan.lab.sink import Sink
from tests.support.snippet_postfix import SnippetPostfix

pytestmark = pytest.mark.postfix

REPO = Path(__file__).resolve().parents[2]
FIX = ('holdscan will scan and release it like new mail; to park mail for a human while '
       'holdscan runs, use "holdscan park ID" instead')


def hold_source_lines(config_dir: Path, tmp_path: Path) -> list[str]:
    config = lab_config(tmp_path / "holdscan.toml", config_dir, "redis://127.0.0.1:1/0",
                        "unix:/nonexistent")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLDSCAN_")}
    p = subprocess.run([sys.executable, "-m", "holdscan.cli", "check", "--config", str(config)],
                       cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in p.stdout + p.stderr, p.stdout + p.stderr
    return [x for x in p.stdout.splitlines() if x[5:].startswith("hold sources:")]


def test_the_lab_postfix_has_no_other_hold_source(postfix: PostfixInstance,
                                                  tmp_path: Path) -> None:
    # Its header_checks hold every message with holdscan's own /^Received:/ HOLD.
    assert "/^Received:/ HOLD" in (postfix.config_dir / "header_checks").read_text()
    assert hold_source_lines(postfix.config_dir, tmp_path) == [
        "ok   hold sources: nothing else in Postfix's configuration parks mail in hold"]


def test_the_deploy_snippets_rule_is_no_other_source(sink: Sink, tmp_path: Path) -> None:
    # docs/install.md's set-up: /^Received:/ HOLD on the public smtpd's own cleanup.
    with SnippetPostfix(sink.port) as pf:
        overrides = run("postconf", "-c", str(pf.config_dir), "-P").stdout
        assert "holdscan-cleanup/unix/header_checks = regexp:" in overrides
        assert hold_source_lines(pf.config_dir, tmp_path) == [
            "ok   hold sources: nothing else in Postfix's configuration parks mail in hold"]


@pytest.fixture
def tables() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="holdscan-tables-"))
    d.chmod(0o755)       # Postfix's daemons read them too
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_other_hold_sources_are_warned_about(sink: Sink, tables: Path, tmp_path: Path) -> None:
    (tables / "extra_checks").write_text("# ours\n/^Subject:.*viagra/ HOLD\n/^X-Ok:/ WARN\n")
    (tables / "senders").write_text("good@example.test OK\nbad@example.test HOLD\n")
    for f in tables.iterdir():
        f.chmod(0o644)
    pf = PostfixInstance(sink.port, extra_main_cf={
        "milter_default_action": "quarantine",
        "smtpd_sender_restrictions": f"check_sender_access texthash:{tables}/senders"})
    # The lab's own header_checks (holdscan's rule), then another HOLD rule.
    pf.settings["header_checks"] += f", regexp:{tables}/extra_checks"
    with pf:
        service = f"127.0.0.1:{pf.port}/inet"
        run("postconf", "-c", str(pf.config_dir), "-P",
            f"{service}/smtpd_recipient_restrictions=check_recipient_access,"
            "inline:{boss@example.test=HOLD},permit_mynetworks,reject")
        lines = hold_source_lines(pf.config_dir, tmp_path)

    assert lines == [
        f'warn hold sources: header_checks regexp:{tables}/extra_checks line 2 '
        f'"/^Subject:.*viagra/ HOLD" also parks mail in hold — {FIX}',
        f"warn hold sources: smtpd_sender_restrictions check_sender_access "
        f'texthash:{tables}/senders line 2 "bad@example.test HOLD" also parks mail in hold '
        f"— {FIX}",
        "warn hold sources: milter_default_action = quarantine parks mail in hold when a milter "
        "fails — holdscan will scan and release it like new mail, as if the milter had "
        "accepted it; set milter_default_action = tempfail to have mail wait for the milter "
        "instead",
        f"warn hold sources: master.cf {service} -o smtpd_recipient_restrictions "
        'check_recipient_access inline:{boss@example.test=HOLD} "HOLD" also parks mail in '
        f"hold — {FIX}",
    ]

"""Every way a client might read a message is scanned: hidden payloads are stopped,
their innocent twins and innocent real-world shapes are clean.

The cases (tests/support/reading_cases.py) hide a zip holding EICAR (infected)
or an attachment named *.zip, with .zip on the deny list (blocked), behind one
quirk each: encodings MIME does not name (yEnc, BinHex, uuencode in a part that
claims another encoding), base64 and quoted-printable as lenient decoders read
them, structure tricks, and names. Each has a twin with the same quirk and an
innocent payload, which must be clean. The innocent corpus
(tests/support/innocent_mail.py) must be clean and never unscannable.
"""

from __future__ import annotations

import pytest

from holdscan.lab.clamd import ClamdServer
from shared.config import HeadersConfig
from shared.contract import Verdict
from tests.support.innocent_mail import innocent_corpus
from tests.support.reading_cases import flat_cases
from tests.support.scanning import REQUEST, make_config
from workers.engine import scan_message
from workers.message import ParsedMessage
from workers.scanners import build_scanners
from workers.scanners.base import Scanner
from workers.scanners.filerules import DENY_EXTENSIONS

CASES = flat_cases()
CORPUS = innocent_corpus()


@pytest.fixture(scope="module")
def zip_denied(clamd: ClamdServer) -> list[Scanner]:
    """The default scanners with .zip on the deny list, as the issue's corpus has it."""
    deny = {"deny_extensions": [*DENY_EXTENSIONS, "zip"]}
    return build_scanners(make_config(clamd.addresses, attachments=deny, archives=deny))


def run(raw: bytes, scanners: list[Scanner]) -> Verdict:
    return scan_message(raw, REQUEST, scanners, HeadersConfig(), "test-worker")


@pytest.mark.parametrize("name", list(CASES))
def test_hidden_payload_is_stopped_and_its_twin_is_clean(scanners: list[Scanner],
                                                         zip_denied: list[Scanner],
                                                         name: str) -> None:
    hostile, twin, expected = CASES[name]
    # Names are judged with .zip denied; hidden EICAR with the defaults.
    chosen = zip_denied if expected == "blocked" else scanners
    verdict = run(hostile, chosen)
    assert verdict.verdict == expected, verdict.reasons
    if expected == "infected":
        assert any(f.verdict == "infected" for f in verdict.findings)
    else:
        assert any(".zip" in f.detail for f in verdict.findings), verdict.reasons
    innocent = run(twin, chosen)
    assert innocent.verdict == "clean", innocent.reasons


@pytest.mark.parametrize("name", list(CORPUS))
def test_innocent_real_world_shapes_are_clean(scanners: list[Scanner], name: str) -> None:
    verdict = run(CORPUS[name], scanners)
    assert verdict.verdict == "clean", verdict.reasons
    assert ParsedMessage.from_bytes(CORPUS[name]).undecidable == ()

"""Parameter readings (workers/mimeparams.py) and body decodings (workers/decoding.py)."""

from __future__ import annotations

import base64
import binascii

from tests.support.reading_cases import binhex, yenc
from workers.decoding import base64_readings, binhex_blocks, qp_readings, uu_blocks, yenc_blocks
from workers.mimeparams import Params, charset_decode, decode_words


def names(field: str, param: str = "filename") -> list[str]:
    return Params.parse(field).values(param)


def test_strict_values_come_first_and_alone_for_ordinary_fields() -> None:
    assert names('attachment; filename="report.pdf"') == ["report.pdf"]
    assert names("attachment; filename=report.pdf; size=12") == ["report.pdf"]
    assert Params.parse('multipart/mixed; boundary="=_b"').first("boundary") == "=_b"


def test_every_reading_of_broken_syntax() -> None:
    assert "file.zip" in names("attachment; filename*1=file.; filename*0=zip")
    assert "zipfile." in names("attachment; filename*1=file.; filename*0=zip")
    assert "file.zip" in names("attachment; filename='file.zip'")
    assert "file.zip" in names("attachment; filena()me=file.zip")
    assert "file.zip" in names("attachment; filename=file.z(a (nested) comment)ip")
    assert "file;.zip" in names("attachment; filename=file;.zip")
    assert "file;.zip" in names("attachment; filename=file\\;.zip")
    assert 'a"b.zip' in names('attachment; filename="a\\"b.zip"')
    assert "my report.pdf" in names("attachment; filename=my report.pdf")
    assert "c.exe" in names("attachment filename=c.exe")


def test_encoded_words_joined_across_folds_and_charsets() -> None:
    data = "見積書.pdf".encode()
    split = (f"=?UTF-8?B?{base64.b64encode(data[:4]).decode()}?=\r\n "
             f"=?UTF-8?B?{base64.b64encode(data[4:]).decode()}?=")
    assert decode_words(split) == ["見積書.pdf"]
    utf16 = base64.b64encode("a.zip".encode("utf-16")).decode()
    assert decode_words(f"=?utf-16?B?{utf16}?=") == ["a.zip"]
    assert "a.zip" in names("attachment; filename*=utf-16be''%00a%00.%00z%00i%00p")


def test_charsets_python_cannot_decode_fall_back() -> None:
    for cs in ("undefined", "idna", "punycode", "rot13", "hex", "base64", "zlib", "no-such"):
        assert charset_decode(b"a.pdf\xff", cs)[0].startswith("a.pdf"), cs
        assert "a.pdf" in names(f"attachment; filename*={cs}''a.pdf"), cs


def test_parameter_reading_is_linear() -> None:
    import time
    started = time.process_time()
    Params.parse("text/plain; " + "a" * 200_000)
    Params.parse("text/plain; " + ";" * 200_000 + '"')
    Params.parse("text/plain; " + "(" * 100_000 + "x=y")
    assert Params.parse("x; " + "a=b; " * 1000).too_many
    assert time.process_time() - started < 1.0


def test_base64_has_one_reading_when_strict_and_many_when_not() -> None:
    data = bytes(range(256)) * 4
    assert [r for r, _ in base64_readings(base64.encodebytes(data))] == [data]
    padded = base64.b64encode(b"x") + base64.b64encode(data)
    assert b"x" + data in [r for r, _ in base64_readings(padded)]
    junk = b"X-Header: junk\r\n" + base64.encodebytes(data)
    assert data in [r for r, _ in base64_readings(junk)]


def test_quoted_printable_readings() -> None:
    assert [r for r, _ in qp_readings(b"caf=C3=A9\r\n")] == ["café\r\n".encode()]
    assert b"AB" in [r for r, _ in qp_readings(b"=W41B")]
    assert b"AB" in [r for r, _ in qp_readings(b"A= \t\r\nB")]
    assert b"AB" in [r for r, _ in qp_readings(b"A=XXB")]


def test_embedded_encodings_round_trip() -> None:
    data = bytes(range(256)) * 3 + b"\x90\x90\x90"
    assert yenc_blocks(yenc(data, "a.zip"), 4) == [("a.zip", data)]
    assert binhex_blocks(binhex(data, "a.zip"), 1 << 20) == [("a.zip", data)]
    uu = b"begin 644 a.zip\r\n" + b"".join(
        binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45)) + b"`\r\nend\r\n"
    assert uu_blocks(uu, 4) == [("a.zip", data)]

"""HTML smuggling: files that script in an HTML attachment or body would build are
decoded and scanned like attachments; ordinary HTML mail is not disturbed."""

from __future__ import annotations

import base64
import time

import pytest

from holdscan.lab.clamd import ClamdServer
from shared.contract import Verdict
from tests.support.discs import iso_image
from tests.support.mail import EICAR, HEADERS, PE, multipart, part, zip_bytes
from tests.support.scanning import Scan, make_config
from workers.message import ParsedMessage
from workers.scanners import build_scanners
from workers.scanners.smuggling import SmugglingScanner

EICAR_ZIP = zip_bytes({"invoice.txt": EICAR})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def atob_page(data: bytes, name: str = "invoice.zip") -> bytes:
    return f"""<!DOCTYPE html><html><body><p>Loading your document...</p><script>
var d = atob("{b64(data)}");
var a = new Uint8Array(d.length); for (var i = 0; i < d.length; i++) a[i] = d.charCodeAt(i);
var blob = new Blob([a], {{type: "application/octet-stream"}});
if (window.navigator.msSaveOrOpenBlob) window.navigator.msSaveOrOpenBlob(blob, "{name}");
else {{ var l = document.createElement("a"); l.href = URL.createObjectURL(blob);
  l.download = "{name}"; l.click(); }}
</script></body></html>""".encode()


def split_page(data: bytes) -> bytes:
    # The blob cut into pieces joined by +, and in an array: the script joins them.
    text = b64(data)
    pieces = [text[i:i + 60] for i in range(0, len(text), 60)]
    joined = " +\n  ".join(f'"{p}"' for p in pieces[: len(pieces) // 2])
    listed = ", ".join(f"'{p}'" for p in pieces[len(pieces) // 2:])
    return (f"<html><script>var x = {joined};\nvar y = [{listed}].join('');\n"
            "var b = new Blob([Uint8Array.from(atob(x + y), c => c.charCodeAt(0))]);\n"
            "location.href = URL.createObjectURL(b);</script></html>").encode()


def hex_page(data: bytes) -> bytes:
    return (f"<html><script>var h = '{data.hex()}'; var u = new Uint8Array(h.length / 2);"
            "for (var i = 0; i < u.length; i++) u[i] = parseInt(h.substr(i * 2, 2), 16);"
            "var b = new Blob([u]); var a = document.createElement('a');"
            "a.href = URL.createObjectURL(b); a.download = 'scan.zip'; a.click();"
            "</script></html>").encode()


def array_page(data: bytes) -> bytes:
    numbers = ",".join(str(b) for b in data)
    return (f"<html><script>var b = new Blob([new Uint8Array([{numbers}])]);"
            "window.navigator.msSaveOrOpenBlob(b, 'update.bin');</script></html>").encode()


def data_uri_page(data: bytes, name: str) -> bytes:
    return (f'<html><body><a href="data:application/octet-stream;base64,{b64(data)}" '
            f'download="{name}">Download your invoice</a></body></html>').encode()


def as_attachment(html: bytes, name: str = "invoice.html") -> bytes:
    return multipart(part(b"Your invoice is attached.\r\n", "text/plain", encoding="7bit"),
                     part(html, "text/html", name))


def as_body(html: bytes) -> bytes:
    return multipart(part(b"Your invoice\r\n", "text/plain", encoding="7bit"),
                     part(html, "text/html; charset=utf-8", encoding="base64"),
                     subtype="alternative")


def details(v: Verdict) -> list[str]:
    return [f.detail for f in v.findings]


@pytest.mark.parametrize("build", [atob_page, split_page, hex_page, array_page,
                                   lambda d: data_uri_page(d, "invoice.zip")],
                         ids=["atob", "split-literals", "hex", "byte-array", "data-uri"])
def test_eicar_zip_built_by_script_is_infected(scan: Scan, build) -> None:  # noqa: ANN001
    v = scan(as_attachment(build(EICAR_ZIP)))
    assert v.verdict == "infected", details(v)


def test_smuggling_in_the_html_body_is_found_too(scan: Scan) -> None:
    assert scan(as_body(atob_page(EICAR_ZIP))).verdict == "infected"


def test_what_the_script_builds_gets_the_file_rules_with_its_download_name(scan: Scan) -> None:
    program = scan(as_attachment(atob_page(PE, "invoice.pdf")))
    assert program.verdict == "blocked"
    assert any("denied file type pe" in d for d in details(program))
    image = scan(as_attachment(atob_page(iso_image({"/A.TXT;1": b"a"}), "invoice.iso")))
    assert image.verdict == "blocked"
    assert any('denied extension .iso: "invoice.iso"' in d for d in details(image))
    archive = scan(as_attachment(hex_page(zip_bytes({"run.scr": b"x"}))))
    assert any('denied extension .scr: "run.scr"' in d for d in details(archive))
    # The technique itself is noted.
    assert any(d.startswith('HTML builds a file in script as "invoice.pdf"')
               for d in details(program))


def test_innocent_twins_are_delivered(scan: Scan) -> None:
    # The same page building a harmless file; a newsletter with inline images and a
    # tracking token; an exported report with a "download CSV" button.
    report = "date,amount\n" + "2024-01-01,100\n" * 50
    newsletter = ('<html><body><img src="data:image/png;base64,'
                  + b64(b"\x89PNG\r\n\x1a\n" + bytes(2000)) + '">'
                  '<a href="https://example.test/t?id=eyJ1c2VyIjoiMTIzNDU2Nzg5MCIsImNhbXBhaWduIjoi'
                  'c3ByaW5nIn0">Read more</a></body></html>').encode()
    for html in (atob_page(zip_bytes({"invoice.pdf": b"%PDF-1.4 ..."})), newsletter,
                 atob_page(report.encode(), "report.csv")):
        v = scan(as_attachment(html))
        assert v.verdict == "clean", details(v)
    assert scan(as_body(newsletter)).verdict == "clean"


def test_the_technique_outcome_is_configurable(clamd: ClamdServer, scan: Scan) -> None:
    strict = build_scanners(make_config(clamd.addresses,
                                        smuggling={"on_smuggling": "blocked"}))
    v = scan(as_attachment(atob_page(b"harmless text " * 10, "notes.txt")), strict)
    assert v.verdict == "blocked"
    assert scan(as_body(atob_page(b"harmless text " * 10, "notes.txt"))).verdict == "clean"


def test_hostile_html_costs_linear_time() -> None:
    hostile = (b"<html><script>Blob atob " + b"data:" + b"a" * 200_000 + b" \"" + b"A" * 200_000
               + b" [" + b"1," * 100_000 + b" download='" + b"x" * 100_000 + b"</script>")
    msg = ParsedMessage.from_bytes(
        HEADERS + b"Content-Type: text/html\r\n\r\n" + hostile)
    started = time.process_time()
    SmugglingScanner({}).scan(msg)
    assert time.process_time() - started < 2.0


def test_decoys_past_the_blob_limit_do_not_hide_the_file(clamd: ClamdServer, scan: Scan) -> None:
    small = build_scanners(make_config(clamd.addresses, smuggling={"max_blobs": 3}))
    decoys = "".join(f'<a href="data:application/octet-stream;base64,{b64(bytes([i]) * 64)}">'
                     f"d{i}</a>" for i in range(5))
    page = data_uri_page(zip_bytes({"run.scr": b"x"}), "invoice.zip")
    v = scan(as_attachment(page.replace(b"<body>", b"<body>" + decoys.encode())), small)
    assert v.verdict == "unscannable"
    assert any("more than 3 blobs" in d for d in details(v))
    assert scan(as_attachment(page.replace(b"<body>", b"<body>" + decoys.encode()))
                ).verdict == "blocked"


def test_an_svg_image_that_smuggles_is_caught_too(scan: Scan) -> None:
    script = atob_page(EICAR_ZIP).split(b"<script>")[1].split(b"</script>")[0]
    svg = (b'<svg xmlns="http://www.w3.org/2000/svg"><script><![CDATA['
           + script + b"]]></script></svg>")
    v = scan(multipart(part(svg, "image/svg+xml", "logo.svg")))
    assert v.verdict == "infected", details(v)
    plain = b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'
    assert scan(multipart(part(plain, "image/svg+xml", "logo.svg"))).verdict == "clean"


def test_a_smuggling_page_inside_an_archive_is_searched_too(scan: Scan) -> None:
    infected = scan(multipart(part(zip_bytes({"invoice.html": atob_page(EICAR_ZIP)}),
                                   "application/zip", "invoice.zip")))
    assert infected.verdict == "infected", details(infected)
    program = scan(multipart(part(zip_bytes({"docs/invoice.htm": split_page(PE)}),
                                  "application/zip", "invoice.zip")))
    assert program.verdict == "blocked"
    assert any("denied file type pe" in d and "invoice.htm" in d for d in details(program))
    named = scan(multipart(part(zip_bytes({"scan.html": atob_page(b"x" * 100, "scan.iso")}),
                                "application/zip", "scan.zip")))
    assert any('denied extension .iso: "scan.iso"' in d for d in details(named))
    page = b"<html><body><p>Minutes of the meeting</p></body></html>"
    assert scan(multipart(part(zip_bytes({"minutes.html": page}), "application/zip",
                               "minutes.zip"))).verdict == "clean"

"""Innocent mail in the shapes real mailers send, quirks included: every one must be clean.

    innocent_corpus() -> {name: raw message}

Each shape is one a mail client shows without complaint and a scanner must not
quarantine: boundaries that never occur or are missing, boundaries that are
prefixes of one another, text after the closing boundary, a second Content-Type,
delivery and read reports, calendar invitations, S/MIME and PGP, digests, long
and folded non-ASCII names, raw 8-bit headers, and mailer quirks. Built in code
(no files committed); the bytes are fixed, so a failure names the same case
every run.
"""

from __future__ import annotations

import base64
import random
import urllib.parse

from tests.support.mail import HEADERS, b64, multipart, part, zip_bytes

__all__ = ["innocent_corpus"]

TOP = (b"Received: from mx.example.test by hold.example.test;\r\n"
       b"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\n"
       b"Subject: innocent\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"Message-ID: <innocent@example.test>\r\nMIME-Version: 1.0\r\n")


def _pdf(rnd: random.Random, size: int = 3000) -> bytes:
    return b"%PDF-1.4\n" + rnd.randbytes(size) + b"\n%%EOF\n"


def _ew(text: str, charset: str, limit: int = 30) -> str:
    """`text` as RFC 2047 B-words of `charset`, one per `limit` characters, each whole."""
    words = []
    for i in range(0, len(text), limit):
        data = text[i:i + limit].encode(charset)
        words.append(f"=?{charset}?B?{base64.b64encode(data).decode()}?=")
    return words[0] if len(words) == 1 else "\r\n ".join(words)


def _dsn(statuses: int) -> bytes:
    blocks = "".join(
        f"\r\nFinal-Recipient: rfc822; user{i}@example.test\r\nOriginal-Recipient: "
        f"rfc822;user{i}@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Remote-MTA: dns; mx{i}.example.test\r\nDiagnostic-Code: smtp; 550 5.1.1 "
        f"<user{i}@example.test>: Recipient address rejected: User unknown\r\n"
        for i in range(statuses))
    return (b"Received: by hold.example.test (Postfix)\r\n"
            b"From: MAILER-DAEMON@example.test (Mail Delivery System)\r\n"
            b"To: alice@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Auto-Submitted: auto-replied\r\nMessage-ID: <dsn@example.test>\r\n"
            b"MIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
            b'\tboundary="A1B2C3D4.1700000000/mx.example.test"\r\n'
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b"This is a MIME-encapsulated message.\r\n\r\n"
            b"--A1B2C3D4.1700000000/mx.example.test\r\n"
            b"Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            b"I'm sorry to have to inform you that your message could not\r\n"
            b"be delivered to one or more recipients.\r\n\r\n"
            b"--A1B2C3D4.1700000000/mx.example.test\r\n"
            b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mx.example.test\r\nX-Postfix-Queue-ID: A1B2C3D4\r\n"
            b"Arrival-Date: Mon,  1 Jan 2024 00:00:00 +0000 (UTC)\r\n"
            + blocks.encode() +
            b"\r\n--A1B2C3D4.1700000000/mx.example.test\r\n"
            b"Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            + multipart(part(b"Original text.\r\n", "text/plain", encoding="7bit"),
                        part(_pdf(random.Random(5)), "application/pdf", "report.pdf"),
                        boundary="orig") +
            b"\r\n--A1B2C3D4.1700000000/mx.example.test--\r\n")


def innocent_corpus() -> dict[str, bytes]:
    rnd = random.Random(11)
    text = part(b"Hello Bob,\r\n\r\nsee attached.\r\n", "text/plain; charset=utf-8",
                encoding="7bit")
    pdf = part(_pdf(rnd), "application/pdf", "report.pdf")
    out: dict[str, bytes] = {}

    # -- structure quirks -------------------------------------------------------------
    out["boundary that never occurs"] = (
        TOP + b'Content-Type: multipart/mixed; boundary="never-used"\r\n\r\n'
        b"Hello Bob,\r\n\r\nthis mailer forgot the parts.\r\n-- \r\nAlice\r\n")
    out["multipart without a boundary parameter"] = (
        TOP + b"Content-Type: multipart/alternative\r\n\r\nJust one text body.\r\n")
    out["multipart without boundary, dashes in the text"] = (
        TOP + b"Content-Type: multipart/mixed\r\n\r\nSee below\r\n--\r\n"
        b"--------\r\n-- \r\nAlice\r\n")
    inner = multipart(part(b"plain\r\n", "text/plain", encoding="7bit"),
                      part(b"<p>html</p>\r\n", "text/html", encoding="7bit"),
                      boundary="----=_Part_1_2", subtype="alternative",
                      headers=b"")
    out["boundaries that are prefixes of one another"] = multipart(
        inner, pdf, boundary="----=_Part_1")
    out["boundaries that are prefixes, three levels"] = multipart(
        multipart(multipart(text, boundary="=_b_1_1_1", headers=b""), pdf,
                  boundary="=_b_1_1", headers=b""), boundary="=_b_1")
    out["text after the closing boundary"] = multipart(text, pdf) + (
        b"\r\n_______________________________________________\r\n"
        b"list mailing list\r\nlist@example.test\r\nhttps://lists.example.test/list\r\n")
    out["mailing-list footer after the closing boundary"] = multipart(text, pdf).replace(
        b"--=_b0und4ry--\r\n", b"--=_b0und4ry--\r\n\r\n--\r\nTo unsubscribe, e-mail: "
        b"list-unsubscribe@example.test\r\n")
    out["footer part appended after the closing boundary"] = multipart(text, pdf) + (
        b"--=_b0und4ry\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Disposition: inline\r\n\r\n_______________\r\nlist footer\r\n"
        b"--=_b0und4ry--\r\n")
    out["closing boundary repeated after the close"] = multipart(text, pdf) + (
        b"\r\n--=_b0und4ry--\r\nsent from a broken mailer\r\n")
    out["DSN with two status parts and returned headers"] = _dsn(3).replace(
        b"Content-Description: Undelivered Message\r\nContent-Type: message/rfc822\r\n",
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.test"
        b"\r\n\r\nFinal-Recipient: rfc822; x@example.test\r\nAction: delayed\r\n"
        b"Status: 4.4.1\r\n\r\n--A1B2C3D4.1700000000/mx.example.test\r\n"
        b"Content-Description: Undelivered Message Headers\r\n"
        b"Content-Type: text/rfc822-headers\r\n")
    out["second conflicting Content-Type, single part"] = (
        TOP + b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n")
    out["second Content-Type, different charset"] = (
        TOP + b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nGr=FC=DFe\r\n")
    out["multipart/report DSN with several status parts"] = _dsn(4)
    out["multipart/report DSN with one status part"] = _dsn(1)
    out["read receipt (MDN)"] = (
        TOP + b'Content-Type: multipart/report; report-type=disposition-notification;\r\n'
        b'\tboundary="mdn"\r\n\r\n--mdn\r\nContent-Type: text/plain\r\n\r\nYour message was '
        b"displayed.\r\n--mdn\r\nContent-Type: message/disposition-notification\r\n\r\n"
        b"Reporting-UA: mail.example.test; Mailer\r\nFinal-Recipient: rfc822;bob@example.test"
        b"\r\nOriginal-Message-ID: <x@example.test>\r\nDisposition: manual-action/"
        b"MDN-sent-manually; displayed\r\n\r\n--mdn\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"From: alice@example.test\r\nSubject: hi\r\n\r\n--mdn--\r\n")
    out["empty part and empty preamble"] = (
        TOP + b'Content-Type: multipart/mixed; boundary="e"\r\n\r\n--e\r\n\r\n--e\r\n'
        + text + b"\r\n--e--\r\n")
    out["delimiters with trailing blanks"] = multipart(text, pdf).replace(
        b"--=_b0und4ry\r\n", b"--=_b0und4ry  \r\n")
    out["LF line ends"] = multipart(text, pdf).replace(b"\r\n", b"\n")
    out["unclosed multipart"] = multipart(text, pdf).rsplit(b"--=_b0und4ry--", 1)[0]
    out["preamble with dash lines"] = multipart(text, pdf).replace(
        b"This is a multi-part message in MIME format.\r\n",
        b"--\r\n---- preamble ----\r\n--x\r\n")

    # -- Japanese and other long non-ASCII names --------------------------------------------
    jname = "御見積書_2024年度_株式会社サンプル商事_営業部.pdf"
    for charset in ("iso-2022-jp", "utf-8", "shift_jis"):
        words = _ew(jname, charset, limit=12)
        out[f"Japanese name in folded RFC 2047 words ({charset})"] = multipart(
            text, (f'Content-Type: application/pdf;\r\n name="{words}"\r\n'
                   f'Content-Disposition: attachment;\r\n filename="{words}"\r\n'
                   "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64(_pdf(rnd)))
    out["Japanese name, words folded without quotes"] = multipart(
        text, (f"Content-Type: application/pdf;\r\n name={_ew(jname, 'utf-8', 10)}\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64(_pdf(rnd)))
    # A character split across two words (mailers cut by bytes, not characters).
    data = jname.encode("utf-8")
    split = (f"=?UTF-8?B?{base64.b64encode(data[:7]).decode()}?=\r\n\t"
             f"=?UTF-8?B?{base64.b64encode(data[7:]).decode()}?=")
    out["UTF-8 character split across encoded words"] = multipart(
        text, (f'Content-Type: application/pdf; name="{split}"\r\n'
               "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64(_pdf(rnd)))
    long_name = "Übersicht der Änderungen für das Geschäftsjahr – " * 3 + "Entwurf.docx"
    enc = urllib.parse.quote(long_name.encode("utf-8"), safe="")
    pieces = [enc[i:i + 60] for i in range(0, len(enc), 60)]
    cont = ";\r\n".join(f" filename*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{p}"
                        for i, p in enumerate(pieces))
    out["long RFC 2231 name in continuations"] = multipart(
        text, ("Content-Type: application/vnd.openxmlformats-officedocument."
               "wordprocessingml.document\r\nContent-Disposition: attachment;\r\n" + cont
               + "\r\nContent-Transfer-Encoding: base64\r\n\r\n").encode()
        + b64(zip_bytes({"word/document.xml": b"<w:document/>"})))
    raw_jis = "見積書.pdf".encode("iso-2022-jp")
    out["raw ISO-2022-JP name (no encoded words)"] = multipart(
        text, b'Content-Type: application/pdf; name="' + raw_jis + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(_pdf(rnd)))
    out["8-bit headers (UTF-8 and Latin-1)"] = (
        TOP.replace(b"Subject: innocent", "Subject: Grüße – 日本".encode())
        + b'Content-Type: multipart/mixed; boundary="8b"\r\n\r\n--8b\r\n' + text
        + b'\r\n--8b\r\nContent-Type: application/pdf; name="'
        + "Übersicht März.pdf".encode() + b'"\r\nContent-Disposition: attachment; filename="'
        + "Résumé.pdf".encode("latin-1") + b'"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        + b64(_pdf(rnd)) + b"\r\n--8b--\r\n")
    out["name folded with a tab inside"] = multipart(
        text, b'Content-Type: application/pdf;\r\n\tname="quarterly report for the\r\n'
        b'\tboard.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + b64(_pdf(rnd)))

    # -- reports, invitations, security --------------------------------------------------------
    ics = (b"BEGIN:VCALENDAR\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\n"
           b"VERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:040000008200E00074C5B7101A82"
           b"\r\nDTSTART:20240102T100000Z\r\nSUMMARY;LANGUAGE=en-US:Planning\r\n"
           b"END:VEVENT\r\nEND:VCALENDAR\r\n")
    out["Outlook calendar invitation"] = multipart(
        multipart(part(b"You are invited.\r\n", "text/plain", encoding="7bit"),
                  part(ics, 'text/calendar; charset="utf-8"; method=REQUEST'),
                  boundary="_000_alt_", subtype="alternative", headers=b""),
        part(ics, 'application/ics; name="invite.ics"').replace(
            b"Content-Type: application/ics", b"Content-Type: application/ics"),
        boundary="_004_mixed_")
    sig = rnd.randbytes(1500)
    out["S/MIME signed"] = (
        TOP + b'Content-Type: multipart/signed; protocol="application/pkcs7-signature";\r\n'
        b'\tmicalg=sha-256; boundary="----sig"\r\n\r\nThis is an S/MIME signed message\r\n\r\n'
        b"------sig\r\n" + text + b"\r\n------sig\r\n"
        b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n' + b64(sig)
        + b"\r\n------sig--\r\n")
    out["S/MIME encrypted"] = (
        TOP + b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data;\r\n"
        b'\tname="smime.p7m"\r\nContent-Transfer-Encoding: base64\r\n'
        b'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n'
        + b64(b"\x30\x82\x10\x00" + rnd.randbytes(4000)))
    armor = (b"-----BEGIN PGP MESSAGE-----\r\n\r\n"
             + base64.encodebytes(rnd.randbytes(900)).replace(b"\n", b"\r\n")
             + b"=AbCd\r\n-----END PGP MESSAGE-----\r\n")
    out["PGP/MIME encrypted"] = (
        TOP + b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        b'\tboundary="pgp"\r\n\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)'
        b"\r\n--pgp\r\nContent-Type: application/pgp-encrypted\r\n"
        b"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n"
        b'--pgp\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n'
        b'Content-Description: OpenPGP encrypted message\r\n'
        b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n' + armor
        + b"\r\n--pgp--\r\n")
    out["PGP inline signed"] = (
        TOP + b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nHello.\r\n"
        b"- -- \r\nAlice\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niQEzBAEBCAAdFiEE\r\n=abcd\r\n"
        b"-----END PGP SIGNATURE-----\r\n")
    digest_msgs = b"".join(
        b"--digest\r\n\r\nFrom: member%d@example.test\r\nSubject: topic %d\r\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nMessage %d of the digest.\r\n" % (i, i, i)
        for i in range(5))
    out["mailing-list digest"] = (
        TOP + b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n--outer\r\n'
        b"Content-Type: text/plain\r\n\r\nToday's topics: ...\r\n--outer\r\n"
        b'Content-Type: multipart/digest; boundary="digest"\r\n\r\n' + digest_msgs
        + b"--digest--\r\n\r\n--outer--\r\n")
    out["forwarded message with an attachment"] = multipart(
        text, b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
        + multipart(part(b"orig\r\n", "text/plain", encoding="7bit"), pdf, boundary="fwd",
                    headers=b"From: c@example.test\r\nSubject: orig\r\nMIME-Version: 1.0\r\n"))

    # -- mailer quirks -----------------------------------------------------------------------------
    out["lower-case headers and odd CTE spelling"] = (
        TOP + b'content-type: MULTIPART/MIXED; BOUNDARY="Q"\r\n\r\n--Q\r\n'
        b"content-type: TEXT/PLAIN; charset=\"ISO-8859-1\"\r\n"
        b"content-transfer-encoding: Quoted-Printable\r\n\r\nGr=FC=DFe=\r\n aus K=F6ln\r\n"
        b"--Q\r\ncontent-type: application/pdf; name=report.pdf\r\n"
        b"content-transfer-encoding: BASE64\r\n\r\n"
        + base64.encodebytes(_pdf(rnd)).replace(b"\n", b"\r\n") + b"--Q--\r\n")
    out["base64 with 72-character lines and trailing blanks"] = multipart(
        text, b"Content-Type: application/pdf; name=\"a.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"".join(
            line + b"  \r\n" for line in _chunks(base64.b64encode(_pdf(rnd)), 72)))
    out["Apple Mail attachment"] = multipart(
        part(b"Hi\r\n", "text/plain; charset=us-ascii", encoding="7bit"),
        b'Content-Disposition: inline;\r\n\tfilename="Scan 12.pdf"\r\n'
        b'Content-Type: application/pdf;\r\n\tx-unix-mode=0644;\r\n\tname="Scan 12.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(_pdf(rnd)),
        boundary="Apple-Mail=_6F1F5B2C-1234-4D3A-9C1A-1F2E3D4C5B6A")
    out["trailing semicolon and empty parameter"] = (
        TOP + b"Content-Type: text/plain; charset=;\r\n\r\nhello\r\n")
    out["boundary with spaces around ="] = (
        TOP + b'Content-Type: multipart/mixed; boundary = "sp"\r\n\r\n--sp\r\n' + text
        + b"\r\n--sp--\r\n")
    out["Lotus Notes boundary with spaces"] = multipart(text, pdf, boundary="=_related 0012AB_=")
    out["no MIME-Version"] = HEADERS.replace(b"MIME-Version: 1.0\r\n", b"") + (
        b"\r\nplain old mail\r\n")
    out["uuencoded text file in the body"] = (
        TOP + b"Content-Type: text/plain\r\n\r\nThe notes:\r\n\r\nbegin 644 notes.txt\r\n"
        + b"".join(_uu(b"meeting notes, nothing else\n" * 4)) + b"`\r\nend\r\n")
    out["name with a comment-looking part"] = multipart(
        text, part(_pdf(rnd), "application/pdf", "Report (final) v2.pdf"))
    out["name with semicolon, quoted"] = multipart(
        text, part(_pdf(rnd), "application/pdf", "Minutes; March.pdf"))
    out["winmail.dat"] = multipart(
        text, part(b"\x78\x9f\x3e\x22" + rnd.randbytes(2000), "application/ms-tnef",
                   "winmail.dat"))
    out["vCard"] = multipart(
        text, part(b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Alice\r\nEND:VCARD\r\n",
                   "text/x-vcard", "alice.vcf"))
    return out


def _chunks(data: bytes, n: int) -> list[bytes]:
    return [data[i:i + n] for i in range(0, len(data), n)]


def _uu(data: bytes) -> list[bytes]:
    import binascii
    return [binascii.b2a_uu(c).replace(b"\n", b"\r\n") for c in _chunks(data, 45)]

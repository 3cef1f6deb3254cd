"""What the detail page shows of a quarantined message, as plain text only.

The message is hostile. Nothing of it is ever rendered as HTML or served: the page gets
its headers (as written, and Subject/From decoded), a plain-text preview of its
text/plain parts (HTML parts are named, never shown), and a list of its attachments with
name, type and size. Every string is shown escaped by the templates; control characters
(CR, LF inside a header, escape sequences) are made visible here so that a header cannot
pose as two.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.policy
import re
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from dispatcher import queuefile

PREVIEW_LIMIT = 20_000          # characters of text shown per message
PART_LIMIT = 200                # parts listed
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: str, keep_newlines: bool = False) -> str:
    """Control characters (and newlines, unless kept) as \\xNN escapes."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if keep_newlines else text.replace("\n", "\\x0a").replace("\t", " ")


def decoded(value: str) -> str:
    """A header's encoded words decoded (a broken one stays as written)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


@dataclass
class Attachment:
    name: str
    type: str
    size: int


@dataclass
class Preview:
    sender: str
    recipients: list[str]
    headers: list[tuple[str, str]]
    subject: str
    from_: str
    text: str
    truncated: bool
    html_parts: int
    attachments: list[Attachment] = field(default_factory=list)
    error: str = ""


def preview(queue_file: Path) -> Preview:
    qf = queuefile.parse(queue_file.read_bytes())
    raw = qf.message_bytes(b"\n")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    # Folded lines joined (a fold is not content); any other line break stays visible.
    headers = [(visible(k), visible(_FOLD.sub("", str(v)))) for k, v in msg.items()]
    texts: list[str] = []
    html = 0
    attachments: list[Attachment] = []
    for n, part in enumerate(msg.walk()):
        if n >= PART_LIMIT or part.is_multipart():
            continue
        ctype = part.get_content_type()
        name = part.get_filename()
        is_attachment = name is not None or part.get_content_disposition() == "attachment"
        payload = _payload(part)
        if ctype == "text/plain" and not is_attachment:
            texts.append(_text(part, payload))
        elif ctype == "text/html" and not is_attachment:
            html += 1
        else:
            attachments.append(Attachment(visible(decoded(name or "")), visible(ctype),
                                          len(payload)))
    text = "\n\n".join(texts)
    return Preview(
        sender=visible(qf.sender), recipients=[visible(r.address) for r in qf.recipients],
        headers=headers, subject=visible(decoded(msg.get("Subject", "") or "")),
        from_=visible(decoded(msg.get("From", "") or "")),
        text=visible(text[:PREVIEW_LIMIT], keep_newlines=True),
        truncated=len(text) > PREVIEW_LIMIT, html_parts=html, attachments=attachments)


def _payload(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except (ValueError, TypeError):
        data = None
    return data if isinstance(data, bytes) else b""


def _text(part: Message, payload: bytes) -> str:
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


__all__ = ["Attachment", "Preview", "decoded", "preview", "visible"]

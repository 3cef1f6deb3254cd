"""Passwords a message may give for its own encrypted attachments.

"The password for the attached invoice is Invoice2024!": senders of legitimate
encrypted archives put the password in the mail, and so do attackers, because
an encrypted archive passes the scanners that cannot open it. So the words of
the Subject and of the text parts (plain and HTML) are tried as passwords.

Words right after a password cue (password, passwort, mot de passe, пароль,
パスワード, ...; "Password: x", "password is x", "pw=x") come first, then every
other word in the order it appears. Each word is tried as written and without
surrounding punctuation. At most `limit` candidates, from at most 64 KiB of
each text part and 256 KiB in all: the cost of trying them is bounded by the
archives scanner's `max_passwords` options.
"""

from __future__ import annotations

import html
import re

from workers.derived import is_derived
from workers.message import ParsedMessage, decode_words

_TEXT_BYTES = 64 * 1024
_TOTAL_BYTES = 256 * 1024       # of all text parts together
_HEADER_BYTES = 256 * 1024
_MAX_WORD = 64
_CUE = re.compile(
    r"password|passwort|passwd|passphrase|passcode|kennwort|wachtwoord|parola|senha|"
    r"contrase[nñ]a|clave|has[lł]o|heslo|salasana|l[oö]senord|adgangskode|jelsz[oó]|"
    r"пароль|密码|密碼|パスワード|암호|비밀번호|\bpwd?\b|\bpass\b|\bpin\b|\bcode\b|"
    r"mot de passe|\bmdp\b", re.IGNORECASE)
_FILLERS = frozenset({"is", "ist", "est", "es", "is:", "=", ":", "-", "–", "—", "de", "du",
                      "for", "für", "pour", "the", "archive", "file", "zip", "attachment"})
_BRACKETS = "\"'()[]{}<>«»“”‘’*"
_PUNCT = ".,;:!?" + _BRACKETS
_TAG = re.compile(r"<[^<>]{0,4096}>")


def _subject(raw: bytes) -> str:
    head = raw[:_HEADER_BYTES].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = re.search(rb"(?im)^subject:[ \t]*((?:.*)(?:\r?\n[ \t].*)*)", head)
    if not m:
        return ""
    value = re.sub(rb"\r?\n[ \t]", b" ", m.group(1)).decode("utf-8", "replace")
    return decode_words(value)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _variants(token: str) -> list[str]:
    # "(pw Sommer-2024!)": the brackets go, the "!" may be the password's own.
    bare = token.strip(_BRACKETS)
    out = [token, bare, bare.rstrip(".,;:"), token.strip(_PUNCT)]
    return [t for t in dict.fromkeys(out) if 0 < len(t) <= _MAX_WORD]


def candidates(msg: ParsedMessage, limit: int) -> list[str]:
    """The message's words as password candidates, cued ones first; at most `limit`."""
    texts = [_subject(msg.raw)]
    left = _TOTAL_BYTES
    for part in msg.parts:
        if is_derived(part) or not part.content_type.startswith("text/") or left <= 0:
            continue
        text = _text(part.payload[:min(_TEXT_BYTES, left)])
        left -= min(_TEXT_BYTES, len(part.payload))
        if part.content_type == "text/html":
            text = html.unescape(_TAG.sub(" ", text))
        texts.append(text)
    cued: list[str] = []
    plain: list[str] = []
    for text in texts:
        tokens = text.split()
        for i, token in enumerate(tokens):
            plain += _variants(token)
            m = _CUE.search(token)
            if not m:
                continue
            rest = token[m.end():].lstrip(":=")     # "password:x", "pw=x"
            if rest:
                cued += _variants(rest)
            taken = 0
            for follower in tokens[i + 1:i + 6]:
                if follower.lower().strip(_PUNCT) in _FILLERS | {""}:
                    continue
                cued += _variants(follower)
                taken += 1
                if taken == 2:
                    break
        if len(plain) > 4 * limit and len(cued) >= limit:
            break
    return list(dict.fromkeys(cued + plain))[:limit]

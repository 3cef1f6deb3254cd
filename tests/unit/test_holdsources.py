"""Finding the other sources of HOLD in a Postfix configuration, without a Postfix."""

from __future__ import annotations

import pytest

from holdscan.check import CheckResult
from holdscan.holdsources import (
    Finding,
    find_hold_sources,
    hold_lines,
    is_holdscan_rule,
    logical_lines,
    split_list,
    table_rules,
)

FIX = ('holdscan will scan and release it like new mail; to park mail for a human while '
       'holdscan runs, use "holdscan park ID" instead')


def reader(files: dict[str, str]):  # noqa: ANN201
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return files[path]
    return read


# -- syntax ---------------------------------------------------------------------------------------

def test_split_list_keeps_brace_groups_whole() -> None:
    assert split_list("permit_mynetworks,  check_sender_access hash:/a ,reject") == [
        "permit_mynetworks", "check_sender_access", "hash:/a", "reject"]
    assert split_list("inline:{ a=HOLD, { b = OK } } x") == ["inline:{ a=HOLD, { b = OK } }", "x"]
    assert split_list("") == []


def test_logical_lines_join_continuations_and_skip_comments() -> None:
    text = "# comment\n/a/\n  HOLD\n\n   # indented comment\nkey value\n\tmore\n"
    assert list(logical_lines(text)) == [(2, "/a/ HOLD"), (6, "key value more")]


def test_hold_lines_in_pattern_tables() -> None:
    text = "\n".join([
        "/^Subject:.*viagra/ HOLD",          # 1
        "/^Subject: x/i hold checked by hand",  # 2
        "!/^From:.*@example\\.com/ HOLD",      # 3
        "/^X-Spam: yes/ REJECT",              # 4
        "/^X-a\\/b/ HOLD",                     # 5: an escaped delimiter
        "|^X-Pipe:| HOLD",                    # 6: another delimiter
        "/^X-Holding/ HOLDING",               # 7: no HOLD action
        "if /^X-Outer/",                      # 8
        "/^X-Inner/ HOLD",                    # 9
        "endif",                              # 10
        "# /^X-Comment/ HOLD",                # 11
        "/^X-Folded/",                        # 12
        "  HOLD",                             # 13
        "/^X-Case/ Hold",                     # 14
    ])
    assert [n for n, _ in hold_lines("regexp", text)] == [1, 2, 3, 5, 6, 9, 12, 14]
    assert hold_lines("pcre", text)[0] == (1, "/^Subject:.*viagra/ HOLD")


def test_hold_lines_in_key_value_tables() -> None:
    text = "spammer@example.com HOLD\nfriend@example.com OK\n192.0.2.0/24 hold listed\nx HOLDING\n"
    assert hold_lines("hash", text) == [(1, "spammer@example.com HOLD"),
                                        (3, "192.0.2.0/24 hold listed")]


@pytest.mark.parametrize("line,ours", [
    ("/^Received:/ HOLD", True), ("/^Received:/    HOLD", True), ("/^Received:/i HOLD", True),
    ("/^Received:/ HOLD scanned by holdscan", True), ("/^Received: from evil/ HOLD", False),
    ("/^Subject:/ HOLD", False), ("/^Received:/ REJECT", False)])
def test_holdscan_rule(line: str, ours: bool) -> None:
    assert is_holdscan_rule("regexp", line) is ours
    assert is_holdscan_rule("hash", line) is False


# -- tables -------------------------------------------------------------------------------------

def test_indexed_table_is_read_from_its_source_file_or_postmap() -> None:
    files = {"/etc/postfix/access": "a@x.test OK\nb@x.test HOLD\n"}
    r = table_rules("hash:/etc/postfix/access", reader(files))
    assert r.holds == [("hash:/etc/postfix/access", 2, "b@x.test HOLD")] and not r.unreadable
    r = table_rules("proxy:lmdb:/etc/postfix/gone", reader({}),
                    dump=lambda t: "c@x.test HOLD\n" if t == "lmdb:/etc/postfix/gone" else None)
    assert r.holds == [("lmdb:/etc/postfix/gone", None, "c@x.test HOLD")]
    r = table_rules("hash:/etc/postfix/gone", reader({}))
    assert r.holds == [] and r.unreadable == [
        ("hash:/etc/postfix/gone", "/etc/postfix/gone: No such file or directory")]


def test_tables_holdscan_cannot_read_are_named() -> None:
    r = table_rules("mysql:/etc/postfix/mysql-access.cf", reader({}))
    assert r.unreadable == [("mysql:/etc/postfix/mysql-access.cf",
                             "holdscan cannot read mysql: tables")]


def test_values_of_static_inline_and_composite_tables() -> None:
    assert table_rules("static:HOLD", reader({})).holds == [("static:HOLD", None, "HOLD")]
    assert table_rules("static:{OK}", reader({})).holds == []
    r = table_rules("inline:{ a@x.test=OK, { b@x.test = HOLD by hand } }", reader({}))
    assert [h[2] for h in r.holds] == ["HOLD by hand"]
    files = {"/c": "10.0.0.0/8 HOLD\n", "/t": "x OK\n"}
    r = table_rules("unionmap:{cidr:/c, texthash:/t, pgsql:/p.cf}", reader(files))
    assert r.holds == [("cidr:/c", 1, "10.0.0.0/8 HOLD")]
    assert [u[0] for u in r.unreadable] == ["pgsql:/p.cf"]


# -- the whole configuration --------------------------------------------------------------------

HOLDSCAN_CHECKS = "/^Received:/    HOLD\n"


def lab_like() -> dict[str, str]:
    """What the lab Postfix and the deploy snippets look like: only holdscan's rule."""
    return {"header_checks": "regexp:/pf/header_checks",
            "mime_header_checks": "regexp:/pf/header_checks",
            "nested_header_checks": "regexp:/pf/header_checks", "body_checks": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "", "smtpd_restriction_classes": "",
            "milter_default_action": "tempfail", "smtpd_milters": "", "non_smtpd_milters": ""}


def test_holdscan_own_rule_is_no_other_source() -> None:
    files = {"/pf/header_checks": HOLDSCAN_CHECKS, "/pf/holdscan_hold_checks": HOLDSCAN_CHECKS}
    services = {("smtp", "inet"): "smtpd", ("holdscan-cleanup", "unix"): "cleanup",
                ("cleanup", "unix"): "cleanup"}
    overrides = {("smtp", "inet"): {"cleanup_service_name": "holdscan-cleanup"},
                 ("holdscan-cleanup", "unix"): {
                     "header_checks": "regexp:/pf/holdscan_hold_checks"}}
    assert find_hold_sources(lab_like(), services, overrides, reader(files)) == []


def test_every_kind_of_source_is_found_once() -> None:
    main = lab_like()
    main.update({
        "header_checks": "regexp:/pf/header_checks, pcre:/pf/more_checks",
        "mime_header_checks": "regexp:/pf/header_checks, pcre:/pf/more_checks",
        "body_checks": "regexp:/pf/body_checks",
        "smtpd_restriction_classes": "hold_them",
        "hold_them": "check_sender_access texthash:/pf/held_senders",
        "smtpd_recipient_restrictions": ("permit_mynetworks, check_recipient_access "
                                         "hash:/pf/rcpt, check_client_access mysql:/pf/m.cf, "
                                         "check_policy_service inet:127.0.0.1:10023, "
                                         "reject_unauth_destination"),
        "milter_default_action": "quarantine",
        "smtpd_milters": "inet:127.0.0.1:8891, { unix:/run/m.sock, default_action=quarantine }",
    })
    files = {
        "/pf/header_checks": HOLDSCAN_CHECKS + "/^Subject:.*viagra/ HOLD\n",
        "/pf/more_checks": "/^X-Other/ WARN\n",
        "/pf/body_checks": "/casino/ HOLD\n",
        "/pf/held_senders": "bad@example.test HOLD\n",
        "/pf/rcpt": "boss@example.test hold_them\nauditor@example.test HOLD\n",
        "/pf/sub_checks": "/^X-Sub/ HOLD\n",
        "/pf/nested": "n@example.test HOLD\n",
    }
    services = {("smtp", "inet"): "smtpd", ("submission", "inet"): "smtpd",
                ("sub-cleanup", "unix"): "cleanup"}
    overrides = {
        ("sub-cleanup", "unix"): {"header_checks": "regexp:/pf/sub_checks"},
        ("submission", "inet"): {
            "smtpd_sender_restrictions": ("check_sender_access "
                                          "inline:{ x@example.test=HOLD, { y@example.test = "
                                          "check_recipient_access texthash:/pf/nested } }"),
            "milter_default_action": "quarantine"},
    }
    lines = [f.message for f in find_hold_sources(main, services, overrides, reader(files))]
    assert lines == [
        'header_checks regexp:/pf/header_checks line 2 "/^Subject:.*viagra/ HOLD" also parks '
        'mail in hold',
        'body_checks regexp:/pf/body_checks line 1 "/casino/ HOLD" also parks mail in hold',
        'smtpd_recipient_restrictions check_recipient_access hash:/pf/rcpt line 2 '
        '"auditor@example.test HOLD" also parks mail in hold',
        "cannot read smtpd_recipient_restrictions check_client_access mysql:/pf/m.cf to see "
        "whether it answers HOLD (holdscan cannot read mysql: tables)",
        "smtpd_recipient_restrictions check_policy_service inet:127.0.0.1:10023 may answer "
        "HOLD, which parks mail in hold; holdscan cannot see whether it does",
        'hold_them check_sender_access texthash:/pf/held_senders line 1 "bad@example.test '
        'HOLD" also parks mail in hold',
        "milter_default_action = quarantine parks mail in hold when a milter fails",
        "smtpd_milters inet:127.0.0.1:8891 can quarantine mail, which parks it in hold",
        "smtpd_milters unix:/run/m.sock has default_action = quarantine, which parks mail in "
        "hold when that milter fails",
        "smtpd_milters unix:/run/m.sock can quarantine mail, which parks it in hold",
        'master.cf sub-cleanup/unix -o header_checks regexp:/pf/sub_checks line 1 '
        '"/^X-Sub/ HOLD" also parks mail in hold',
        "master.cf submission/inet -o smtpd_sender_restrictions check_sender_access "
        'inline:{ x@example.test=HOLD, { y@example.test = check_recipient_access '
        'texthash:/pf/nested } } "HOLD" also parks mail in hold',
        'master.cf submission/inet -o smtpd_sender_restrictions check_recipient_access '
        'texthash:/pf/nested line 1 "n@example.test HOLD" also parks mail in hold',
        "master.cf submission/inet -o milter_default_action = quarantine parks mail in hold "
        "when a milter fails",
    ]


def test_what_holdscan_does_is_said_on_every_line() -> None:
    main = {**lab_like(), "body_checks": "regexp:/b", "milter_default_action": "quarantine"}
    files = {"/pf/header_checks": HOLDSCAN_CHECKS, "/b": "/x/ HOLD\n"}
    found = find_hold_sources(main, {}, {}, reader(files))
    assert found[0] == Finding('body_checks regexp:/b line 1 "/x/ HOLD" also parks mail in hold',
                               FIX)
    assert found[1].fix.startswith("holdscan will scan and release it like new mail, as if the "
                                   "milter had accepted it; set milter_default_action = tempfail")
    line = CheckResult("hold sources", "warn", found[0].message, found[0].fix).line()
    assert line == ('warn hold sources: body_checks regexp:/b line 1 "/x/ HOLD" also parks mail '
                    f"in hold — {FIX}")
    assert CheckResult("hold sources", "warn", "x").ok

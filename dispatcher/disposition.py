"""What becomes of one scanned message: a pure decision, which the service carries out.

plan() reads the queue file, its verdict, the policy and the [headers] settings,
and returns a Disposition; it touches no file, sends nothing, logs nothing, and
reads no clock (the time comes in as an argument).

The policy (dispatcher/policy.py) gives each recipient an action: deliver (with
the status header), deliver-tagged (and a Subject tag), strip (delivered without
the parts the worker found bad, only if the worker scanned exactly that
stripped message clean; else quarantined instead), quarantine, discard, or hold.
The message then gets one of

    kind        when                                           the service then
    release     every recipient gets it as is, no edits        Spool.release
    rewrite     every recipient gets one new file (the status  Spool.rewrite
                header, a Subject tag, or the stripped
                message); no file at all: discarded
    quarantine  every recipient's copy is stopped              Spool.quarantine
    split       the recipients get different actions: one new  Spool.rewrite with the
                file per delivered group, with only its        quarantine copy, if a
                recipients; the original for the quarantined   group is quarantined:
                group                                          one journaled operation
    leave       some recipient's policy is `hold`              nothing: a human decides

A Disposition carries everything else the service needs: the new queue files'
bytes, the quarantine entry's metadata, the notices (dispatcher/notify.py; sent
after the spool operation), the log lines, and the outcome counted in metrics
and status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from dispatcher import queuefile
from dispatcher.notify import Notice
from dispatcher.policy import Group, Policy, policy_verdict, subject_tag
from shared import mimeparts
from shared.config import HeadersConfig
from shared.contract import HeaderEdit, Verdict
from shared.headers import header_text
from shared.logging import LogLine

# Every outcome has one name, the one counted (metrics, `holdscan status`, --once);
# this is the message of the log line that reports it.
STORY = {"released": "released", "rewritten": "delivered with headers",
         "stripped": "stripped", "quarantined": "quarantined", "discarded": "discarded",
         "split": "split", "held": "left in hold for a human"}

# The outcome for a group of recipients, by the policy's action: what the whole message
# is counted as when every recipient gets it, and the word of the group's notice.
# (A delivered group that is not simply released always gets a new file.)
GROUP_OUTCOME = {"deliver": "rewritten", "deliver-tagged": "rewritten", "strip": "stripped",
                 "quarantine": "quarantined", "discard": "discarded"}
DELIVERED = ("deliver", "deliver-tagged", "strip")


@dataclass(frozen=True)
class Disposition:
    """What to do with one message (see the table above)."""

    kind: str                           # release, rewrite, quarantine, split, leave
    verdict: str                        # counted with the outcome: the verdict's, or gave_up
    outcome: str                        # a key of STORY
    groups: tuple[Group, ...]           # the recipients by what they get
    story: LogLine                      # the one line that tells what happened
    files: tuple[bytes, ...] = ()       # rewrite, split: the new queue files
    quarantine: dict[str, Any] | None = None     # the quarantine entry's metadata
    notices: tuple[Notice, ...] = ()    # for the stopped and stripped groups
    notes: tuple[LogLine, ...] = ()     # logged first (a strip that could not be done)

    def story_with(self, new_ids: list[str]) -> LogLine:
        """The story, with the new queue files' IDs once the spool has made them."""
        if "new_queue_id" not in self.story.fields:
            return self.story
        return replace(self.story, fields={**self.story.fields, "new_queue_id": ",".join(new_ids)})


def plan(queue_file: queuefile.QueueFile, message: bytes, verdict: Verdict, policy: Policy,
         headers: HeadersConfig, *, gave_up: bool = False, now: float = 0.0,
         quarantine_id: str = "",
         line_length_limit: int = queuefile.DEFAULT_LINE_LENGTH_LIMIT) -> Disposition:
    """What the policy says for each recipient of `queue_file` (whose message, CRLF, is
    `message`) with `verdict`. gave_up: no verdict could be had, and `verdict` is the
    error that says so (dispatcher/inflight.py, GiveUp).
    `now` is the quarantine entry's time; `quarantine_id` its ID, should there be one."""
    qid, v = verdict.queue_id, verdict
    qf = queue_file
    everyone = [r.address for r in qf.recipients if not r.done]
    groups = policy.groups(qf.sender, everyone, policy_verdict(v)) or \
        [Group("deliver", [], ["nothing left to deliver"])]
    stripped, groups, notes = _stripped(qid, message, v, groups)
    counted = "gave_up" if gave_up else v.verdict
    if any(g.action == "hold" for g in groups):
        # One recipient's hold keeps the whole message: a human decides for all.
        return Disposition("leave", counted, "held", tuple(groups), LogLine(
            logging.WARNING, STORY["held"], {"queue_id": qid, "reason": "; ".join(v.reasons)}),
            notes=notes)
    split = len(groups) > 1
    if groups[0].action == "deliver" and not split and not _edits_for("deliver", v, headers):
        return Disposition("release", v.verdict, "released", tuple(groups), LogLine(
            logging.INFO, STORY["released"], {"queue_id": qid, "verdict": v.verdict}),
            notes=notes)
    delivered = [g for g in groups if g.action in DELIVERED]
    quarantined = next((g for g in groups if g.action == "quarantine"), None)
    meta = None if quarantined is None else \
        _quarantine_meta(qf, message, v, gave_up, quarantined, now)
    entry = quarantine_id if meta is not None else ""
    if split:
        kind, outcome = "split", "split"
    else:
        kind = "quarantine" if quarantined else "rewrite"
        outcome = GROUP_OUTCOME[groups[0].action]
    files = () if kind == "quarantine" else tuple(
        _file_for(qf, v, g, stripped, split, headers, line_length_limit) for g in delivered)
    # One line tells the message's story: what each group of recipients got and why.
    story = LogLine(logging.INFO, STORY[outcome], {
        "queue_id": qid, "verdict": counted, "reasons": "; ".join(v.reasons),
        "new_queue_id": "", "quarantine_id": entry,
        "policy": "; ".join(f"{g.action} {len(g.recipients)} ({', '.join(g.sources)})"
                            for g in groups)})
    return Disposition(kind, counted, outcome, tuple(groups), story, files, meta,
                       _notices(qf, message, v, groups, entry, stripped), notes)


def _stripped(qid: str, message: bytes, v: Verdict, groups: list[Group]
              ) -> tuple[bytes | None, list[Group], tuple[LogLine, ...]]:
    """The message without its bad parts, if some group is to get that and the worker
    scanned exactly these bytes clean; else those groups are quarantined instead (and
    two quarantined groups are one: the original is stored once). Returns the stripped
    message or None, the groups, and what to log."""
    if not any(g.action == "strip" for g in groups):
        return None, groups, ()
    why = "the scanners could not name removable parts that leave the rest clean"
    if v.strip is not None:
        try:
            data = mimeparts.strip(message, {p.part: p.note for p in v.strip.parts})
            if mimeparts.sha256(data) == v.strip.sha256:
                return data, groups, ()
            why = "the stripped message is not the one the worker scanned"
        except mimeparts.StripError as e:
            why = str(e)
    merged: list[Group] = []
    for g in groups:
        action = "quarantine" if g.action == "strip" else g.action
        same = next((m for m in merged if m.action == action), None)
        if same is None:
            merged.append(Group(action, list(g.recipients), list(g.sources)))
        else:
            same.recipients += g.recipients
            same.sources += [s for s in g.sources if s not in same.sources]
    note = LogLine(logging.WARNING, "cannot strip; quarantined instead",
                   {"queue_id": qid, "why": why})
    return None, merged, (note,)


def _edits_for(action: str, v: Verdict, headers: HeadersConfig) -> list[HeaderEdit]:
    """Header edits for a delivered group: the verdict's own for clean mail; else its
    status header, and for deliver-tagged a Subject tag."""
    if v.verdict == "clean":
        return list(v.header_edits)
    edits = [e for e in v.header_edits if e.op != "subject_tag"]
    if action == "deliver-tagged":
        tag = next((e.value for e in v.header_edits if e.op == "subject_tag"), None) or \
            subject_tag(headers.subject_tags, policy_verdict(v))
        if tag:
            edits.append(HeaderEdit("subject_tag", "Subject", tag))
    return edits


def _file_for(qf: queuefile.QueueFile, v: Verdict, g: Group, stripped: bytes | None,
              split: bool, headers: HeadersConfig, line_length_limit: int) -> bytes:
    """One new queue file: the group's message, edits, and (split) only its recipients."""
    if g.action == "strip" and stripped is not None:
        qf = qf.with_message(stripped)
    if split:
        members = set(g.recipients)
        qf = qf.with_recipients(lambda r: not r.done and r.address in members)
    edits = _edits_for(g.action, v, headers)
    tags = [e.value for e in edits if e.op == "subject_tag"]
    edited = qf.with_headers(add=[(e.name, e.value) for e in edits if e.op == "add"],
                             replace=[(e.name, e.value) for e in edits if e.op == "replace"],
                             subject_tag=tags[0] if tags else None)
    return queuefile.serialize(edited, line_length_limit)


def _quarantine_meta(qf: queuefile.QueueFile, message: bytes, v: Verdict, gave_up: bool,
                     group: Group, now: float) -> dict[str, Any]:
    everyone = [r.address for r in qf.recipients if not r.done]
    meta = {
        "time": now,
        "sender": qf.sender,
        # Whom it was stopped for: a release delivers to them (the others of a
        # split message had their own copies).
        "recipients": list(group.recipients) or everyone,
        "verdict": None if gave_up else v.to_dict(),
        # The on-disk key of quarantine entries (dispatcher/quarantine.py) for what
        # stopped the message: a verdict, gave_up, or parked.
        "action": "gave_up" if gave_up else v.verdict,
        "reason": "; ".join(v.reasons),
        "subject": header_text(message, "Subject"),
        "policy": list(group.sources),
    }
    if set(group.recipients) != set(everyone):
        meta["all_recipients"] = everyone
    return meta


def _notices(qf: queuefile.QueueFile, message: bytes, v: Verdict, groups: list[Group],
             entry: str, stripped: bytes | None) -> tuple[Notice, ...]:
    """A notice for each group whose mail was stopped or changed (the notifier sends the
    kinds its configuration asks for)."""
    removed = "\n".join(p.note for p in v.strip.parts) \
        if stripped is not None and v.strip is not None else ""
    notices = []
    for g in groups:
        if g.action not in ("quarantine", "strip", "discard"):
            continue
        outcome = GROUP_OUTCOME[g.action]
        notices.append(Notice(outcome, {
            "outcome": outcome, "verdict": policy_verdict(v),
            "reasons": "\n".join(v.reasons), "queue_id": v.queue_id,
            "quarantine_id": entry if outcome == "quarantined" else "",
            "removed": removed if outcome == "stripped" else "",
            "sender": qf.sender or "<>", "subject": header_text(message, "Subject"),
            "message_id": header_text(message, "Message-ID"),
        }, list(g.recipients)))
    return tuple(notices)

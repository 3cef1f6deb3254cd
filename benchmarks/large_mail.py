"""Large mail: 1 MB and 10 MB messages carrying a PDF or a zip, through holdscan end to end,
against clamd alone scanning the same kind of bytes, in the same run.

Kinds of message (the whole message, base64 included, is 1 MB or 10 MB):

  pdf   a PDF written here: pages of text whose content streams are deflate-compressed,
        and an image whose pixels are too, so clamd has to inflate every stream;
  zip   a zip of mixed files: text, CSV, JSON, HTML (deflated), a small PDF, and
        photo-like random bytes (stored, as already-compressed files usually are).

Passes, for each size and kind, all against one clamd configured as Debian ships it
(its temporary files in /tmp, its clean-file cache on):

  clamd     clamd alone: each raw message to clamd by 2 concurrent clients, as the 2
            workers would send it (FILDES of a memfd up to 1 MiB, INSTREAM above, as
            workers/clamdclient.py does), a new connection per message, as clamdscan;
  engine    a worker alone: workers.engine.scan_message, every default scanner, in 2
            processes, without Postfix, the dispatcher or Redis;
  holdscan  end to end: the messages by SMTP (2 sessions) to a private Postfix that
            holds them, the dispatcher, Redis, 2 Celery workers (one process each),
            the same clamd, and smtp-sink; from the first message sent to the last
            delivery in Postfix's log.

Every message is built for its pass (its own text, numbers and bytes in every page and
member), so clamd's cache of clean files gives no pass a head start on another. The
servers are started once; each size and kind is warmed up (2 messages through each
pass) before its first timed pass; the passes take turns (clamd, engine, holdscan,
clamd, ...) over 3 rounds; figures are the median [lowest-highest]. CPU per message is
read from /proc for each process tree, as benchmarks/throughput.py does.

Usage: .venv/bin/python benchmarks/large_mail.py [--rounds 3] [--megabytes 80]
           [--sizes 1,10] [--kinds pdf,zip] [--passes clamd,engine,holdscan]
           [--profile DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import array
import base64
import io
import json
import os
import random
import shutil
import smtplib
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab import MailLog, machine_line, spread, versions  # noqa: E402
from throughput import Profiler  # noqa: E402

from holdscan.lab import cpu  # noqa: E402
from holdscan.lab.clamd import ClamdServer  # noqa: E402
from holdscan.lab.cluster import Cluster, write_config  # noqa: E402
from holdscan.lab.postfix import PostfixInstance, free_port  # noqa: E402
from holdscan.lab.redis import RedisServer  # noqa: E402
from workers.clamdclient import FILDES_MAX  # noqa: E402

MB = 1_000_000
WORKERS = 2
SESSIONS = 2
GROUPS = ("postfix", "dispatcher", "workers", "clamd", "redis")
WORDS = ("invoice", "quarterly", "report", "delivery", "contract", "section", "total",
         "amount", "customer", "schedule", "the", "and", "of", "for", "with", "page",
         "revenue", "supplier", "order", "shipment", "balance", "account", "notes")


# -- the messages ------------------------------------------------------------------------------
class Corpus:
    """Text to cut pages and files from: made once, so that building a 10 MB message costs
    a fraction of a second. Each piece cut from it starts with a line of its own, so no two
    pages or members are the same bytes (and clamd's cache knows none of them)."""

    def __init__(self, rnd: random.Random, size: int = 1 << 20) -> None:
        lines, n = [], 0
        while n < size:
            line = " ".join(rnd.choice(WORDS) for _ in range(12)) + f" {rnd.randrange(10**6)}"
            lines.append(line)
            n += len(line) + 1
        self.text = "\n".join(lines).encode()

    def piece(self, rnd: random.Random, size: int, tag: str) -> bytes:
        start = rnd.randrange(len(self.text))
        body = self.text[start:start + size]
        while len(body) < size:         # past the end: go round again from the start
            body += b"\n" + self.text[:size - len(body) - 1]
        return f"{tag} {rnd.getrandbits(64):016x}\n".encode() + body


def pdf_bytes(rnd: random.Random, corpus: Corpus, size: int, tag: str) -> bytes:
    """A PDF of about `size` bytes: an image (random pixels, deflated) for half of it and
    pages of text (about 3 KB of text a page before deflate) for the rest."""
    objects: list[bytes] = []          # object n is objects[n - 1]

    def stream(head: str, data: bytes) -> bytes:
        return (f"<< {head} /Filter /FlateDecode /Length {len(data)} >>\nstream\n".encode()
                + data + b"\nendstream")

    width = 512
    height = max(1, size // 2 // (width * 3))
    pixels = zlib.compress(rnd.randbytes(width * height * 3), 1)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"")                # the page tree, once the pages are known
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects.append(stream(f"/Type /XObject /Subtype /Image /Width {width} /Height {height} "
                          "/ColorSpace /DeviceRGB /BitsPerComponent 8", pixels))
    kids, used, page = [], len(pixels), 0
    while used < size:
        page += 1
        lines = corpus.piece(rnd, 3000, f"{tag} page {page}").decode().splitlines()
        text = "BT /F1 9 Tf 36 760 Td 11 TL\n" + "".join(f"({line}) '\n" for line in lines)
        content = zlib.compress(f"q 200 0 0 150 36 40 cm /Im1 Do Q\n{text}ET\n".encode(), 1)
        objects.append(stream("", content))
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources "
                       f"<< /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> /Contents "
                       f"{len(objects)} 0 R >>".encode())
        kids.append(f"{len(objects)} 0 R")
        used += len(content) + 250
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n"
            "%%EOF\n").encode()
    return bytes(out)


def zip_bytes(rnd: random.Random, corpus: Corpus, size: int, tag: str) -> bytes:
    """A zip of about `size` bytes of mixed files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        def deflated(name: str, data: bytes) -> None:
            zf.writestr(zipfile.ZipInfo(name, (2024, 5, 17, 9, 30, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
        # Text deflates to about a third here: the text files take half of the zip.
        deflated("minutes.txt", corpus.piece(rnd, size * 3 // 4, f"{tag} minutes"))
        rows = "\n".join(f"{i},{rnd.randrange(10**6)},{rnd.choice(WORDS)},{rnd.random():.4f}"
                         for i in range(size // 200))
        deflated("ledger.csv", f"# {tag}\nrow,amount,item,share\n{rows}\n".encode())
        deflated("settings.json", json.dumps({"tag": tag, "entries": [
            {"id": i, "name": rnd.choice(WORDS)} for i in range(200)]}).encode())
        deflated("index.html", b"<html><body><pre>" + corpus.piece(rnd, 20_000, tag)
                 + b"</pre></body></html>")
        deflated("summary.pdf", pdf_bytes(rnd, corpus, 60_000, f"{tag} summary"))
        used = buf.tell()
        zf.writestr(zipfile.ZipInfo("photo.jpg", (2024, 5, 17, 9, 30, 0)),
                    b"\xff\xd8\xff\xe0" + rnd.randbytes(max(1000, size - used - 2000)),
                    compress_type=zipfile.ZIP_STORED)
    return buf.getvalue()


def message(kind: str, size: int, rnd: random.Random, corpus: Corpus, tag: str) -> bytes:
    """A message of about `size` bytes: a short text and one attachment in base64."""
    room = size * 3 // 4 - 2000            # base64 and its line ends cost a third
    if kind == "pdf":
        data, ctype, name = pdf_bytes(rnd, corpus, room, tag), "application/pdf", "report.pdf"
    else:
        data, ctype, name = zip_bytes(rnd, corpus, room, tag), "application/zip", "files.zip"
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    boundary = f"=_part_{rnd.getrandbits(48):012x}"
    head = (f"Received: from client.example.test (client.example.test [192.0.2.7])\r\n"
            f"\tby mx.example.test with ESMTP; Mon, 1 Jan 2024 10:00:00 +0000\r\n"
            f"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\n"
            f"Subject: {kind} {size // MB} MB {tag}\r\nMessage-ID: <{tag}@example.test>\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Hello Bob,\r\n\r\nthe files for {tag} are attached.\r\n\r\nAlice\r\n"
            f"--{boundary}\r\nContent-Type: {ctype}; name=\"{name}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    return head + encoded + f"--{boundary}--\r\n".encode()


class Messages:
    """Fresh messages for each pass: never the same bytes twice in one run."""

    def __init__(self, seed: int = 2024) -> None:
        self.rnd = random.Random(seed)
        self.corpus = Corpus(self.rnd)
        self.n = 0

    def make(self, kind: str, size: int, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            self.n += 1
            out.append(message(kind, size, self.rnd, self.corpus, f"large-{self.n}"))
        return out


# -- clamd alone ---------------------------------------------------------------------------------
def clamd_scan(socket_path: str, data: bytes) -> None:
    """One message to clamd on a connection of its own, the way a worker sends it: FILDES
    of a memfd up to FILDES_MAX, INSTREAM above."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(300)
        s.connect(socket_path)
        if len(data) <= FILDES_MAX:
            fd = os.memfd_create("bench-scan")
            try:
                os.write(fd, data)
                os.lseek(fd, 0, os.SEEK_SET)
                s.sendall(b"zFILDES\0")
                s.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                     array.array("i", [fd]))])
            finally:
                os.close(fd)
        else:
            s.sendall(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                chunk = view[start:start + (1 << 20)]
                s.sendall(struct.pack("!L", len(chunk)))
                s.sendall(chunk)
            s.sendall(b"\0\0\0\0")
        reply = b""
        while not reply.endswith(b"\0"):
            got = s.recv(4096)
            if not got:
                raise RuntimeError("clamd closed the connection without a reply")
            reply += got
    if not reply.endswith(b"OK\0"):
        raise RuntimeError(f"clamd: {reply!r}")


# -- a worker alone ------------------------------------------------------------------------------
_engine: dict[str, Any] = {}


def _engine_init(config: str) -> None:
    from shared.config import load
    from workers.scanners import build_scanners
    cfg = load(config)
    _engine.update(cfg=cfg, scanners=build_scanners(cfg))


def _engine_scan(data: bytes) -> tuple[str, float]:
    """The verdict, and the CPU seconds this process spent on it."""
    from shared.contract import ScanRequest
    from workers.engine import scan_message
    request = ScanRequest("BENCH", 1, "alice@example.test", ["bob@example.test"], "k", 0,
                          "r", 0.0)
    started = time.process_time()
    verdict = scan_message(data, request, _engine["scanners"], _engine["cfg"].headers, "bench")
    return verdict.verdict, time.process_time() - started


# -- the passes ----------------------------------------------------------------------------------
@dataclass
class Result:
    kind: str
    size: int
    round: int
    passname: str
    messages: int
    nbytes: int
    seconds: float
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / MB / self.seconds

    def ms(self, group: str) -> float:
        return 1000 * self.cpu.get(group, 0.0) / self.messages


class Bench:
    def __init__(self, stack: ExitStack, base: Path, args: argparse.Namespace) -> None:
        self.args = args
        sink_port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "postfix", f"127.0.0.1:{sink_port}",
                                 "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (sink.terminate(), sink.wait()))
        self.pf = stack.enter_context(PostfixInstance(sink_port))
        self.clamd = stack.enter_context(ClamdServer(tcp=False, debian=True))
        rds = stack.enter_context(RedisServer())
        self.config = write_config(base / "holdscan.toml", {
            "postfix": {"config_directory": str(self.pf.config_dir)},
            "broker": {"url": rds.url},
            "scanners.clamav": {"addresses": [self.clamd.addresses[0]]}})
        cluster = Cluster(self.config, base)
        stack.callback(cluster.close)
        for i in range(WORKERS):
            cluster.start_worker(concurrency=1, name=f"large{i}-", log_level="INFO")
        cluster.start_dispatcher()
        assert cluster.dispatcher is not None
        self.cluster = cluster
        self.roots = {"postfix": [int((self.pf.queue_dir / "pid" / "master.pid").read_text())],
                      "dispatcher": [cluster.dispatcher.pid],
                      "workers": [w.pid for w in cluster.workers],
                      "clamd": [self.clamd.proc.pid], "redis": [rds.proc.pid]}
        self.log = MailLog(self.pf.maillog)
        self.pool = stack.enter_context(ProcessPoolExecutor(
            WORKERS, initializer=_engine_init, initargs=(str(self.config),)))

    def timed(self, passname: str, messages: list[bytes], kind: str, size: int,
              rnd: int) -> Result:
        procs = cpu.processes()
        before = {g: cpu.tree_seconds(r, procs) for g, r in self.roots.items()}
        start = time.monotonic()
        engine_cpu = self.run(passname, messages)
        seconds = time.monotonic() - start
        procs = cpu.processes()
        used = {g: cpu.tree_seconds(r, procs) - before[g] for g, r in self.roots.items()}
        if passname == "engine":
            used["workers"] = engine_cpu    # the pool's processes, not the idle Celery workers
        return Result(kind, size, rnd, passname, len(messages), sum(map(len, messages)),
                      seconds, used)

    def run(self, passname: str, messages: list[bytes]) -> float:
        """One pass over `messages`; the engine pass returns its processes' CPU seconds."""
        if passname == "engine":
            return self.engine_alone(messages)
        {"clamd": self.clamd_alone, "holdscan": self.end_to_end}[passname](messages)
        return 0.0

    def clamd_alone(self, messages: list[bytes]) -> None:
        with ThreadPoolExecutor(WORKERS) as ex:
            list(ex.map(lambda m: clamd_scan(self.clamd.socket_path, m), messages))

    def engine_alone(self, messages: list[bytes]) -> float:
        results = list(self.pool.map(_engine_scan, messages))
        verdicts = {v for v, _ in results}
        if verdicts != {"clean"}:
            raise RuntimeError(f"verdicts {sorted(verdicts)} for clean messages")
        return sum(t for _, t in results)

    def end_to_end(self, messages: list[bytes]) -> None:
        target = self.log.poll() + len(messages)

        def session(part: list[bytes]) -> None:
            with smtplib.SMTP("127.0.0.1", self.pf.port, timeout=300) as smtp:
                for m in part:
                    smtp.sendmail("alice@example.test", ["bob@example.test"], m)
        with ThreadPoolExecutor(SESSIONS) as ex:
            list(ex.map(session, [messages[i::SESSIONS] for i in range(SESSIONS)]))
        deadline = time.monotonic() + self.args.timeout
        while self.log.poll() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target - self.log.sent} messages not delivered after "
                                   f"{self.args.timeout:.0f}s\n{self.cluster.logs()[-3000:]}")
            time.sleep(0.05)


# -- the report ----------------------------------------------------------------------------------
def report(results: list[Result], args: argparse.Namespace, load_before: float) -> None:
    print(f"\n{args.rounds} rounds, passes taking turns; median [lowest-highest]; "
          f"about {args.megabytes} MB of mail per timed pass; {WORKERS} workers (one process "
          f"each), {WORKERS} concurrent clamd clients for clamd alone")
    print(f"machine: {machine_line().split(', load average')[0]}, load average "
          f"{load_before:.2f} before the runs, {os.getloadavg()[0]:.2f} after")
    print(f"software: {versions()}")
    print("clamd as Debian ships it (temporary files in /tmp, cache on), a one-signature test "
          "database; shared machine: msg/s is noisy, CPU per process tree less so.\n")
    print(f"{'mail':14}{'pass':10}{'msg/s':>22}{'MB/s':>22}{'vs clamd alone':>22}   "
          "CPU ms per message: " + " ".join(GROUPS))
    for size in args.sizes:
        for kind in args.kinds:
            rs = [r for r in results if r.size == size and r.kind == kind]
            alone = {r.round: r for r in rs if r.passname == "clamd"}
            for passname in args.passes:
                mine = [r for r in rs if r.passname == passname]
                if not mine:
                    continue
                ratio = [r.rate / alone[r.round].rate for r in mine if r.round in alone]
                cpus = " ".join(f"{spread([r.ms(g) for r in mine], '{:.0f}')}"
                                if any(r.cpu.get(g) for r in mine) else "-" for g in GROUPS)
                print(f"{f'{size // MB} MB {kind}':14}{passname:10}"
                      f"{spread([r.rate for r in mine], '{:.2f}'):>22}"
                      f"{spread([r.mb_per_s for r in mine], '{:.1f}'):>22}"
                      f"{spread(ratio, '{:.2f}') if passname != 'clamd' else '':>22}   {cpus}")
    print("(vs clamd alone: each round's msg/s over the same round's clamd alone; CPU of the "
          "process trees during the pass, whatever they did: Postfix receives and delivers "
          "only in the holdscan pass)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--megabytes", type=int, default=80,
                    help="mail per timed pass (80: 80 messages of 1 MB, 8 of 10 MB)")
    ap.add_argument("--sizes", default="1,10", help="message sizes in MB")
    ap.add_argument("--kinds", default="pdf,zip")
    ap.add_argument("--passes", default="clamd,engine,holdscan",
                    help="in the order they take turns; clamd alone is the reference")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--profile", metavar="DIR",
                    help="py-spy the dispatcher and workers during the holdscan passes "
                    "(costs CPU: not for figures)")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    args.sizes = [int(s) * MB for s in args.sizes.split(",")]
    args.kinds = args.kinds.split(",")
    args.passes = args.passes.split(",")
    if not set(args.kinds) <= {"pdf", "zip"} or not set(args.passes) <= {
            "clamd", "engine", "holdscan"}:
        ap.error("--kinds from pdf,zip; --passes from clamd,engine,holdscan")
    load_before = os.getloadavg()[0]
    base = Path(tempfile.mkdtemp(prefix="holdscan-large-"))
    os.chmod(base, 0o755)
    made = Messages()
    results: list[Result] = []
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, base, True)
        bench = Bench(stack, base, args)
        warm = set()
        for rnd in range(1, args.rounds + 1):
            for size in args.sizes:
                count = max(2, args.megabytes * MB // size)
                for kind in args.kinds:
                    if (size, kind) not in warm:
                        for passname in args.passes:
                            bench.run(passname, made.make(kind, size, 2))
                        warm.add((size, kind))
                    for passname in args.passes:
                        messages = made.make(kind, size, count)
                        with ExitStack() as profiling:
                            if args.profile and passname == "holdscan":
                                profiling.enter_context(Profiler(
                                    Path(args.profile) / f"{kind}-{size // MB}MB-{rnd}",
                                    {"dispatcher": bench.roots["dispatcher"][0], **{
                                        f"worker{i}": pid
                                        for i, pid in enumerate(bench.roots["workers"])}}))
                            r = bench.timed(passname, messages, kind, size, rnd)
                        del messages
                        results.append(r)
                        print(f"round {rnd} {size // MB:>2} MB {kind} {passname:9} "
                              f"{r.rate:7.2f} msg/s {r.mb_per_s:6.1f} MB/s ({r.messages} in "
                              f"{r.seconds:.1f}s)  CPU ms/msg: " + " ".join(
                                  f"{g} {r.ms(g):.0f}" for g in GROUPS if r.cpu.get(g)),
                              flush=True)
                        if args.json:
                            Path(args.json).write_text(json.dumps(
                                [asdict(x) for x in results], indent=1))
    report(results, args, load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())

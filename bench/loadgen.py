"""A small HTTP/1.1 load generator: closed loop (N clients) or open loop (constant rate).

Standard library only (asyncio over raw keep-alive sockets, no HTTP client library), so it
costs little CPU on a 2-core box where the server under test needs the rest; it runs as its
own process (``python -m bench.loadgen ...``) and reports its own CPU time.

* **closed** — ``--concurrency`` clients, one connection each; a client sends its next
  request as soon as the previous answer arrived. Latency = send → full response.
* **open** — requests are *scheduled* at a constant ``--rate`` (``start + k / rate``),
  whatever the server does; each one takes an idle connection from a pool (opening one if
  none is idle, up to ``--max-connections``). Latency is measured from the **scheduled**
  send time, so queueing in the pool or in the server is never hidden (no coordinated
  omission). ``send_lag`` (scheduled → bytes written) shows how much of it is the
  generator's own delay.

Both modes run ``--warmup`` seconds of load first (not measured, load never pauses), then
``--duration`` measured seconds. ``--snapshot-url`` is fetched right at the start and end
of the measured window (e.g. ``/metrics``, to diff batch-size histograms over exactly that
window). Output: one JSON document (``--out`` or stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MAX_ERROR_SAMPLES = 5
# Servers close idle keep-alive connections (uvicorn after 5 s); a pooled connection idle
# longer than this is replaced rather than reused, so the server's close never races a send.
IDLE_MAX_S = 2.0


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this client understands it."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"only http://host:port/path URLs are supported, got {url}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.hostname, parts.port or 80, path)

    def post(self, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            *(f"{key}: {value}" for key, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def get(self, headers: dict[str, str]) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            *(f"{key}: {value}" for key, value in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Connection:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reusable = True
        self.idle_since = 0.0

    def fresh(self, now: float) -> bool:
        """Still open (no EOF from the server) and not idle for too long."""
        return (
            self.reader is not None
            and self.writer is not None
            and not self.reader.at_eof()
            and not self.writer.is_closing()
            and now - self.idle_since < IDLE_MAX_S
        )

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, limit=1 << 20
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        """Send ``request``; return the status code and the body."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length, chunked = None, False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.reusable = False
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:  # no framing: the body runs until the server closes
            body = await self.reader.read()
            self.reusable = False
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self.reader is not None
        chunks = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # trailer end (no trailers expected)
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reusable = False


class Recorder:
    """Collects per-request outcomes inside the measured window."""

    def __init__(self, window_start: float, window_end: float, check: bytes | None) -> None:
        self.window_start, self.window_end = window_start, window_end
        self.check = check
        self.latencies: list[float] = []
        self.send_lags: list[float] = []
        self.statuses: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.error_samples: list[str] = []
        self.per_second: collections.Counter[int] = collections.Counter()
        self.ok = 0
        self.outside_window_errors = 0

    def record(
        self,
        key_time: float,
        latency: float,
        status: int | None,
        body: bytes,
        error: str | None,
        send_lag: float | None = None,
    ) -> None:
        """``key_time`` decides whether the request belongs to the measured window."""
        failed = error is not None or status is None or not 200 <= status < 300
        if not failed and self.check is not None and self.check not in body:
            failed, error = True, "unexpected-body"
        if not self.window_start <= key_time < self.window_end:
            self.outside_window_errors += failed
            return
        self.statuses[str(status)] += 1
        self.latencies.append(latency)
        if send_lag is not None:
            self.send_lags.append(send_lag)
        self.per_second[int(key_time - self.window_start)] += 1
        if failed:
            reason = error or f"http-{status}"
            self.errors[reason] += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(f"{reason}: {body[:300].decode(errors='replace')}")
        else:
            self.ok += 1


def percentiles(values: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles in milliseconds."""
    if not values:
        return {key: None for key in ("mean", "p50", "p90", "p95", "p99", "p999", "max")}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {
        "mean": sum(ordered) / len(ordered) * 1000,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "p999": rank(0.999),
        "max": ordered[-1] * 1000,
    }


async def fetch(target: Target, headers: dict[str, str]) -> str | None:
    """GET ``target`` on a fresh connection; None when it fails."""
    conn = Connection(target.host, target.port)
    try:
        await conn.connect()
        status, body = await asyncio.wait_for(conn.exchange(target.get(headers)), 10)
        return body.decode(errors="replace") if status == 200 else None
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ProtocolError):
        return None
    finally:
        conn.close()


class Snapshots:
    """Fetch a URL at the start and at the end of the measured window."""

    def __init__(self, url: str | None, headers: dict[str, str]) -> None:
        self.target = Target.parse(url) if url else None
        self.headers = headers
        self.start: str | None = None
        self.end: str | None = None

    async def take(self, which: str, at: float) -> None:
        if self.target is None:
            return
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        setattr(self, which, await fetch(self.target, self.headers))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuWindow:
    """This process's CPU time over the measured window."""

    def __init__(self) -> None:
        self.begin: float | None = None
        self.end: float | None = None

    async def watch(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        self.begin = cpu_seconds()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        self.end = cpu_seconds()

    def seconds(self) -> float | None:
        if self.begin is None or self.end is None:
            return None
        return self.end - self.begin


async def closed_loop(args: argparse.Namespace, requests: list[bytes]) -> dict:
    target = Target.parse(args.url)
    start = time.monotonic() + 0.05
    window_start = start + args.warmup
    window_end = window_start + args.duration
    recorder = Recorder(window_start, window_end, args.check)
    snapshots = Snapshots(args.snapshot_url, args.headers)
    cpu = CpuWindow()

    async def client(index: int) -> None:
        conn: Connection | None = None
        position = index
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while True:
            sent = time.monotonic()
            if sent >= window_end:
                break
            request = requests[position % len(requests)]
            position += args.concurrency
            status, body, error = None, b"", None
            try:
                async with asyncio.timeout(args.timeout):
                    if conn is None:
                        conn = Connection(target.host, target.port)
                        await conn.connect()
                    status, body = await conn.exchange(request)
            except TimeoutError:
                error = "timeout"
            except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
                error = type(exc).__name__
            done = time.monotonic()
            if conn is not None and (error is not None or not conn.reusable):
                conn.close()
                conn = None
            # a closed-loop request belongs to the window in which it completed
            recorder.record(done, done - sent, status, body, error)
        if conn is not None:
            conn.close()

    await asyncio.gather(
        *(client(i) for i in range(args.concurrency)),
        snapshots.take("start", window_start),
        snapshots.take("end", window_end),
        cpu.watch(window_start, window_end),
    )
    return summary(args, recorder, snapshots, cpu)


class Pool:
    """Idle keep-alive connections, opened on demand up to ``limit``; FIFO waiters."""

    def __init__(self, target: Target, limit: int) -> None:
        self.target, self.limit = target, limit
        self.idle: list[Connection] = []
        self.opened = 0
        self.peak = 0
        self.waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()

    async def acquire(self) -> Connection:
        now = time.monotonic()
        while self.idle:  # no waiters while connections are idle
            conn = self.idle.pop()
            if conn.fresh(now):
                return conn
            conn.close()
            self.opened -= 1
        if self.opened >= self.limit:
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over as we were cancelled
                    handed = waiter.result()
                    if handed is not None:
                        self.release(handed)
                    else:
                        self._give_up_slot()
                raise
            if conn is not None:
                return conn
            # else: we inherited the slot of a discarded connection; open a new one
        else:
            self.opened += 1
        self.peak = max(self.peak, self.opened)
        conn = Connection(self.target.host, self.target.port)
        try:
            await conn.connect()
        except BaseException:
            self.discard(conn)
            raise
        return conn

    def release(self, conn: Connection) -> None:
        if not conn.reusable:
            self.discard(conn)
        elif not self._hand_over(conn):
            conn.idle_since = time.monotonic()
            self.idle.append(conn)

    def discard(self, conn: Connection) -> None:
        conn.close()
        self._give_up_slot()

    def _give_up_slot(self) -> None:
        """A connection slot is free: the next waiter may open one, else the count drops."""
        if not self._hand_over(None):
            self.opened -= 1

    def _hand_over(self, conn: Connection | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


async def open_loop(args: argparse.Namespace, requests: list[bytes]) -> dict:
    target = Target.parse(args.url)
    loop = asyncio.get_running_loop()
    total = round((args.warmup + args.duration) * args.rate)
    start = time.monotonic() + 0.1
    window_start = start + args.warmup
    window_end = window_start + args.duration
    recorder = Recorder(window_start, window_end, args.check)
    snapshots = Snapshots(args.snapshot_url, args.headers)
    cpu = CpuWindow()
    pool = Pool(target, args.max_connections)
    tasks: set[asyncio.Task] = set()
    lag_at_dispatch: list[float] = []

    async def one(index: int, scheduled: float) -> None:
        request = requests[index % len(requests)]
        status, body, error, sent = None, b"", None, None
        conn: Connection | None = None
        try:
            # the deadline counts from the scheduled time, like the latency
            async with asyncio.timeout_at(scheduled + args.timeout):
                conn = await pool.acquire()
                sent = time.monotonic()
                status, body = await conn.exchange(request)
        except TimeoutError:
            error = "timeout"
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as exc:
            error = type(exc).__name__
        done = time.monotonic()
        if conn is not None:
            if error is None:
                pool.release(conn)
            else:
                pool.discard(conn)
        lag = None if sent is None else sent - scheduled
        # an open-loop request belongs to the window in which it was scheduled
        recorder.record(scheduled, done - scheduled, status, body, error, send_lag=lag)

    async def dispatch() -> None:
        for index in range(total):
            scheduled = start + index / args.rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if window_start <= scheduled < window_end:
                lag_at_dispatch.append(time.monotonic() - scheduled)
            task = loop.create_task(one(index, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    await asyncio.gather(
        dispatch(),
        snapshots.take("start", window_start),
        snapshots.take("end", window_end),
        cpu.watch(window_start, window_end),
    )
    if tasks:
        await asyncio.gather(*list(tasks))
    pool.close()
    result = summary(args, recorder, snapshots, cpu)
    result["offered_rate"] = args.rate
    result["send_lag_ms"] = percentiles(recorder.send_lags)
    result["dispatch_lag_ms"] = percentiles(lag_at_dispatch)
    result["peak_connections"] = pool.peak
    return result


def summary(
    args: argparse.Namespace, recorder: Recorder, snapshots: Snapshots, cpu: CpuWindow
) -> dict:
    total = sum(recorder.statuses.values())
    cpu_time = cpu.seconds()
    return {
        "tool": "bench.loadgen (python asyncio, raw HTTP/1.1 keep-alive)",
        "mode": args.mode,
        "url": args.url,
        "concurrency": getattr(args, "concurrency", None),
        "warmup_s": args.warmup,
        "duration_s": args.duration,
        "requests": total,
        "ok": recorder.ok,
        "errors": total - recorder.ok,
        "error_kinds": dict(recorder.errors),
        "error_samples": recorder.error_samples,
        "errors_outside_window": recorder.outside_window_errors,
        "statuses": dict(recorder.statuses),
        "throughput_rps": recorder.ok / args.duration,
        "latency_ms": percentiles(recorder.latencies),
        "per_second": [recorder.per_second.get(s, 0) for s in range(int(args.duration))],
        "loadgen_cpu_s": cpu_time,
        "loadgen_cores": None if cpu_time is None else cpu_time / args.duration,
        "snapshot_start": snapshots.start,
        "snapshot_end": snapshots.end,
    }


def load_bodies(path: Path) -> list[bytes]:
    lines = [line.strip() for line in path.read_bytes().splitlines()]
    bodies = [line for line in lines if line]
    if not bodies:
        raise SystemExit(f"{path} holds no request bodies (one JSON document per line)")
    return bodies


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/path")
    parser.add_argument("--method", choices=["POST", "GET"], default="POST")
    parser.add_argument("--bodies", type=Path, help="POST: JSON bodies, one per line")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: clients")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests/s")
    parser.add_argument("--max-connections", type=int, default=512, help="open loop pool cap")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds first")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    parser.add_argument("--check", help="substring every 2xx body must contain")
    parser.add_argument("--snapshot-url", help="GET at window start and end (e.g. /metrics)")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--out", type=Path, help="write the JSON result here (else stdout)")
    args = parser.parse_args(argv)
    if args.method == "POST" and args.bodies is None:
        parser.error("POST needs --bodies")
    args.headers = dict((part.strip() for part in header.split(":", 1)) for header in args.header)
    args.check = args.check.encode() if args.check else None
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = Target.parse(args.url)
    if args.method == "GET":
        requests = [target.get(args.headers)]
    else:
        requests = [target.post(body, args.headers) for body in load_bodies(args.bodies)]
    runner = closed_loop if args.mode == "closed" else open_loop
    result = asyncio.run(runner(args, requests))
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

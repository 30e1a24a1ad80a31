"""HTTP load generator, run as its own process: N clients POST /search in closed loops, bounded in count and time.

    python -m askcorpus.bench.load --url http://127.0.0.1:8000 --concurrency 8 --requests 400 --duration 10 \
        --queries questions.json [--mode hybrid] [--k 10] [--no-rerank] [--honour-retry-after]

Prints one JSON object: per-request latencies (seconds) of the 200s and of the 503s, ok/error counts, counts by
status, elapsed seconds, answered requests per second. With --honour-retry-after a client that gets a 503 waits
the Retry-After seconds the server sent before asking again, as HTTP clients should. Only loopback addresses are
accepted.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

from ..system import is_loopback


class HTTPError(Exception):
    """The server's answer was not HTTP/1.1 this client can read (or the connection broke)."""


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs or JSON POSTs and reads Content-Length answers.

    Written against the socket rather than with http.client, whose header parsing (email.parser) cost ~1 ms
    per request here: the load generator should time the server, not itself.
    """

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.headers: dict[bytes, bytes] = {}  # of the last answer, names in lower case

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        return sock

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        reused = self.sock is not None
        if self.sock is None:
            self.sock = self._connect()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        message = (head + "\r\n").encode("ascii") + (body or b"")
        try:
            self.sock.sendall(message)
            self._receive()
        except (HTTPError, ConnectionError):
            if not reused:
                raise
            # The server closed this idle keep-alive connection (uvicorn does after 5 s) before reading the
            # request: send it again on a new one, as HTTP clients do.
            self.close()
            self.sock = self._connect()
            self.sock.sendall(message)
            self._receive()
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HTTPError(f"not an HTTP status line: {lines[0][:80]!r}") from None
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        self.headers = fields
        if b"content-length" not in fields:
            raise HTTPError("answer without Content-Length")
        length = int(fields[b"content-length"])
        while len(self.buffer) < length:
            self._receive()
        answer, self.buffer = self.buffer[:length], self.buffer[length:]
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, answer

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise HTTPError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _retry_after(connection: Connection) -> float:
    try:
        return max(0.0, float(connection.headers.get(b"retry-after", b"0")))
    except ValueError:
        return 0.0


def run_load(url: str, queries: list[str], *, concurrency: int, requests: int, duration: float,
             mode: str = "hybrid", k: int = 10, timeout: float = 30.0, honour_retry_after: bool = False,
             rerank: bool | None = None) -> dict:
    """Closed-loop clients, one keep-alive connection each, until `requests` are sent or `duration` passes."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    if not is_loopback(host):
        raise ValueError(f"refusing to load {host}: the load generator only targets loopback addresses")
    if not queries:
        raise ValueError("no queries")
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    rejected: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    deadline = time.perf_counter() + duration

    def client(number: int) -> None:
        nonlocal issued
        connection = Connection(host, port, timeout)
        try:
            while time.perf_counter() < deadline:
                with lock:
                    if issued >= requests:
                        return
                    index = issued
                    issued += 1
                fields = {"query": queries[index % len(queries)], "k": k, "mode": mode}
                body = json.dumps(fields if rerank is None else fields | {"rerank": rerank}).encode()
                started = time.perf_counter()
                try:
                    status, _ = connection.post("/search", body)
                except (OSError, HTTPError, ValueError) as error:
                    connection.close()
                    with lock:
                        errors.append(type(error).__name__)
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    statuses[str(status)] = statuses.get(str(status), 0) + 1
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        errors.append(f"HTTP {status}")
                        if status == 503:
                            rejected.append(elapsed)
                if status == 503 and honour_retry_after:
                    time.sleep(min(_retry_after(connection), max(0.0, deadline - time.perf_counter())))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + timeout + 5)
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "statuses": statuses,
        "transport_errors": sum(1 for e in errors if not e.startswith("HTTP ")),
        "rejected_latencies_s": rejected,
        "elapsed_s": elapsed,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "latencies_s": latencies,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m askcorpus.bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--queries", required=True, help="JSON file holding a list of query strings")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100, help="at most this many requests in all")
    parser.add_argument("--duration", type=float, default=10.0, help="stop issuing requests after this many seconds")
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--no-rerank", action="store_true", help='send "rerank": false (the cheap path)')
    parser.add_argument("--honour-retry-after", action="store_true",
                        help="after a 503, wait the Retry-After seconds before the next request")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 256 or not 1 <= args.requests <= 100_000 or not 0 < args.duration <= 600:
        parser.error("concurrency 1-256, requests 1-100000, duration up to 600 s")
    with open(args.queries, encoding="utf-8") as handle:
        queries = [q for q in json.load(handle) if isinstance(q, str) and q.strip()]
    result = run_load(args.url, queries, concurrency=args.concurrency, requests=args.requests,
                      duration=args.duration, mode=args.mode, k=args.k, honour_retry_after=args.honour_retry_after,
                      rerank=False if args.no_rerank else None)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

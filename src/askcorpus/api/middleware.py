"""ASGI middleware: one log line (and one metrics observation) per request, and a request body size limit."""

import json
import logging
import time
from typing import Any, Callable

from fastapi.responses import JSONResponse

log = logging.getLogger("askcorpus.api")


class AccessLogMiddleware:
    """Logs `METHOD /path STATUS 12.3ms` once per HTTP request (the raw, still percent-encoded path), and hands
    (path, status, seconds) to `observe` (the metrics)."""

    def __init__(self, app: Any, observe: Callable[[str, int, float], None] | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            path = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
            if isinstance(path, bytes):
                path = path.split(b"?", 1)[0].decode("latin-1")
            seconds = time.perf_counter() - started
            log.info("%s %s %d %.1fms", scope["method"], path, status, seconds * 1000)
            if self.observe is not None:
                self.observe(scope["path"], status, seconds)


class BodyLimitMiddleware:
    """Answers 413 to any request whose body is larger than `max_bytes` (declared or actually sent).

    It holds the whole (small) body anyway, so it also answers 422 to a JSON body that is not text at all.
    """

    def __init__(self, app: Any, max_bytes: int, streamed: Callable[[dict], int | None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # The routes whose bodies stream through (uploads), with their own limit: streamed(scope) -> limit or None.
        self.streamed = streamed

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.streamed(scope) if self.streamed is not None else None
        if limit is not None:
            await _stream_limited(self.app, scope, receive, send, limit)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_json(send, 400, {"detail": "Content-Length is not a number"})
                    return
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        # Read the whole (small) body up front so an over-long chunked body is refused before any handler runs.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and _is_json(scope):
            try:
                body.decode(json.detect_encoding(body))
            except UnicodeDecodeError:  # FastAPI would answer 400 "error parsing the body"
                await _send_json(send, 422, {"detail": "request body is not valid JSON (not UTF-8 text)"})
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Callable) -> None:
        await _send_json(send, 413, {"detail": f"request body is larger than the limit of {self.max_bytes} bytes"})


class _TooLarge(Exception):
    pass


async def _stream_limited(app: Any, scope: dict, receive: Callable, send: Callable, limit: int) -> None:
    """Pass the body through unbuffered, counting it: past `limit` bytes (declared or sent) the answer is 413,
    whatever the app would have said."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            await _send_json(send, 413, {"detail": f"request body is larger than the limit of {limit} bytes"})
            return
    size = 0
    over = False
    started = False

    async def counted() -> dict:
        nonlocal size, over
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            over = True
            raise _TooLarge()
        return message

    async def guarded(message: dict) -> None:
        nonlocal started
        if over:
            return  # the app's answer to a body it could not read; the 413 below replaces it
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counted, guarded)
    except Exception:
        if not over:
            raise
    if over and not started:
        await _send_json(send, 413, {"detail": f"request body is larger than the limit of {limit} bytes"})


def _is_json(scope: dict) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


async def _send_json(send: Callable, status: int, data: dict) -> None:
    response = JSONResponse(data, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})

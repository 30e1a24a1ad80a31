"""A scripted OpenAI-compatible chat server on 127.0.0.1 (real HTTP, fixed replies) for what a real model does only
sometimes: markers out of range, the no-answer phrase, a wrong number, slow streams, 401, 500, silence."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "scripted-model"


@dataclass
class Script:
    """What the server answers next: `text` streamed in `pieces` (each after `delay` seconds), or an HTTP `status`
    with an error body, or `hang` (accept and never answer), or `garbage` (a 200 that is not an event stream)."""

    text: str = ""
    pieces: int = 0  # 0: one piece per word
    delay: float = 0.0
    status: int = 200
    hang: bool = False
    garbage: bool = False
    message: str = ""  # the error body's message (default: "scripted failure <status>")


@dataclass
class ScriptedLLM:
    script: Script = field(default_factory=Script)
    requests: list[dict] = field(default_factory=list)
    sent_pieces: int = 0  # pieces of the last reply actually sent
    finished: threading.Event = field(default_factory=threading.Event)  # the last reply's stream has ended
    closed_early: bool = False  # the client left before the last reply's end

    def say(self, text: str, **options) -> "ScriptedLLM":
        self.script = Script(text=text, **options)
        return self

    def pieces(self, text: str) -> list[str]:
        count = self.script.pieces
        if count <= 0:
            words = text.split(" ")
            return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]
        size = max(1, -(-len(text) // count))
        return [text[i:i + size] for i in range(0, len(text), size)]


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    body: dict = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                  "model": MODEL, "choices": [] if usage else [{"index": 0, "delta": {} if content is None else
                                                                {"content": content}, "finish_reason": finish}]}
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def scripted_app(llm: ScriptedLLM) -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests"}]})

    async def chat(request: Request) -> Response:
        body = await request.json()
        llm.requests.append(body)
        script = llm.script
        if script.hang:  # until the client gives up
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=499)
        if script.status != 200:
            return JSONResponse({"error": {"message": script.message or f"scripted failure {script.status}",
                                           "type": "scripted",
                                           "code": script.status}}, status_code=script.status)
        if script.garbage:
            return Response("<html>not an event stream</html>", media_type="text/event-stream")
        llm.sent_pieces = 0
        llm.closed_early = False
        llm.finished.clear()
        pieces = llm.pieces(script.text)

        async def stream():
            try:
                for piece in pieces:
                    if script.delay:
                        await asyncio.sleep(script.delay)
                    yield _chunk(piece)
                    llm.sent_pieces += 1
                yield _chunk(finish="stop")
                prompt = sum(len(m["content"].split()) for m in body["messages"])
                yield _chunk(usage={"prompt_tokens": prompt, "completion_tokens": len(pieces),
                                    "total_tokens": prompt + len(pieces)})
                yield b"data: [DONE]\n\n"
            except BaseException:
                llm.closed_early = True
                raise
            finally:
                if llm.sent_pieces < len(pieces):
                    llm.closed_early = True
                llm.finished.set()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])

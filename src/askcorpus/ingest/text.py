"""Readers for text formats: plain text and Markdown byte for byte, HTML as the text a browser shows."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from ..errors import IngestError
from .titles import first_title, markdown_title, plain_title

Read = tuple[str, str, tuple[int, ...]]  # (text, title or "", page starts)


def decode_utf8(data: bytes) -> str:
    if b"\x00" in data:
        raise IngestError("file looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(f"not valid UTF-8 (byte {error.start}: {error.reason})") from error


def read_plain(data: bytes) -> Read:
    """.txt: the file decoded as UTF-8, byte for byte (no newline translation, no stripping)."""
    text = decode_utf8(data)
    return text, plain_title(text), ()


def read_markdown(data: bytes) -> Read:
    """.md: like .txt; the title is the first `#` heading."""
    text = decode_utf8(data)
    return text, markdown_title(text), ()


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_HIDDEN_TAGS = frozenset("script style noscript template head svg iframe object".split())


class _VisibleText(HTMLParser):
    """Collects the text a browser shows: hidden elements dropped, blocks on their own lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden_depth = 0
        self.in_title = False
        self.title = ""
        self.h1_depth = 0
        self.h1 = ""
        self.h1_done = False
        self.in_pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title = True
        elif tag == "h1" and not self.h1_done:
            self.h1_depth += 1
        if tag in _HIDDEN_TAGS:
            self.hidden_depth += 1
        elif tag == "pre":
            self.in_pre += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag == "h1" and self.h1_depth:
            self.h1_depth -= 1
            self.h1_done = bool(self.h1.strip())
        if tag in _HIDDEN_TAGS:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif tag == "pre":
            self.in_pre = max(0, self.in_pre - 1)
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title += data
        if self.hidden_depth:
            return
        if self.h1_depth:
            self.h1 += data
        self.parts.append(data if self.in_pre else re.sub(r"\s+", " ", data))


def read_html(data: bytes) -> Read:
    """.html/.htm: the visible text, one block per paragraph; the title is <title>, else the first <h1>."""
    parser = _VisibleText()
    try:
        parser.feed(decode_utf8(data))
        parser.close()
    except IngestError:
        raise
    except Exception as error:  # HTMLParser is lenient; anything it raises means unusable input
        raise IngestError(f"HTML could not be parsed: {error}") from error
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    text = "\n\n".join(line for line in lines if line)
    return text, first_title(parser.title, parser.h1), ()

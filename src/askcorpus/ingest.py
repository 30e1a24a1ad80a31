"""Reading a corpus folder into Documents: one reader per format, bad files skipped with a reason."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable

from .errors import IngestError
from .records import Document

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf")


@dataclass(frozen=True)
class Skipped:
    """A file the build passed over, and why."""

    doc_id: str
    reason: str


@dataclass(frozen=True)
class SourceFile:
    """A corpus file found on disk, not yet read."""

    doc_id: str
    path: Path


def doc_id_for(path: Path, root: Path) -> str:
    """The path relative to the corpus root, with '/' separators whatever the OS."""
    return path.relative_to(root).as_posix()


def find_sources(root: Path) -> tuple[list[SourceFile], list[Skipped]]:
    """Every supported file under `root`, recursively, sorted; hidden files and escaping links are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise IngestError(f"corpus folder {root} does not exist or is not a folder")
    resolved_root = root.resolve()
    sources: list[SourceFile] = []
    skipped: list[Skipped] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        doc_id = relative.as_posix()
        if not path.resolve().is_relative_to(resolved_root):
            skipped.append(Skipped(doc_id, "links outside the corpus folder"))
        elif path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped.append(Skipped(doc_id, f"unsupported format {path.suffix or '(no extension)'}"))
        else:
            sources.append(SourceFile(doc_id, path))
    return sources, skipped


def read_document(source: SourceFile, data: bytes | None = None) -> Document:
    """Read one file into a Document, or raise IngestError saying why it cannot be used."""
    if data is None:
        try:
            data = source.path.read_bytes()
        except OSError as error:
            raise IngestError(f"cannot read file: {error.strerror or error}") from error
    if not data.strip():
        raise IngestError("file is empty")
    reader = _READERS[source.path.suffix.lower()]
    text, title, page_starts = reader(data)
    if not text.strip():
        raise IngestError("no text could be extracted")
    return Document(
        doc_id=source.doc_id,
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        title=title or source.doc_id,
        page_starts=page_starts,
    )


def load_corpus(root: Path) -> tuple[list[Document], list[Skipped]]:
    """Read every usable document under `root`; the rest come back as Skipped with a reason."""
    sources, skipped = find_sources(root)
    documents: list[Document] = []
    for source in sources:
        try:
            documents.append(read_document(source))
        except IngestError as error:
            log.warning("skipping %s: %s", source.doc_id, error)
            skipped.append(Skipped(source.doc_id, str(error)))
    return documents, skipped


# --- readers: bytes -> (text, title, page_starts) ---------------------------------------------


def _decode_utf8(data: bytes) -> str:
    if b"\x00" in data:
        raise IngestError("file looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IngestError(f"not valid UTF-8 (byte {error.start}: {error.reason})") from error


def _first_line_title(text: str) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip()
        if line:
            return line[:200]
    return ""


def read_plain(data: bytes) -> tuple[str, str, tuple[int, ...]]:
    """.txt and .md: the file decoded as UTF-8, byte for byte (no newline translation, no stripping)."""
    text = _decode_utf8(data)
    return text, _first_line_title(text), ()


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
        self.in_pre = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self.in_title = True
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
        self.parts.append(data if self.in_pre else re.sub(r"\s+", " ", data))


def read_html(data: bytes) -> tuple[str, str, tuple[int, ...]]:
    """.html/.htm: the visible text, one block per paragraph, scripts and styles dropped."""
    parser = _VisibleText()
    try:
        parser.feed(_decode_utf8(data))
        parser.close()
    except IngestError:
        raise
    except Exception as error:  # HTMLParser is lenient; anything it raises means unusable input
        raise IngestError(f"HTML could not be parsed: {error}") from error
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    paragraphs = [line for line in lines if line]
    text = "\n\n".join(paragraphs)
    title = re.sub(r"\s+", " ", parser.title).strip()
    return text, title or _first_line_title(text), ()


PAGE_SEPARATOR = "\n\n"


def read_pdf(data: bytes) -> tuple[str, str, tuple[int, ...]]:
    """.pdf: each page's extracted text, pages joined by a blank line, where each page starts recorded."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise IngestError("PDF is encrypted")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        metadata_title = (reader.metadata.title if reader.metadata else None) or ""
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise IngestError(f"PDF could not be parsed: {error}") from error
    except Exception as error:  # pypdf raises a wide range of errors on damaged files
        raise IngestError(f"PDF could not be parsed: {type(error).__name__}: {error}") from error
    text_parts: list[str] = []
    page_starts: list[int] = []
    offset = 0
    for page_text in pages:
        if text_parts:
            text_parts.append(PAGE_SEPARATOR)
            offset += len(PAGE_SEPARATOR)
        page_starts.append(offset)
        text_parts.append(page_text)
        offset += len(page_text)
    text = "".join(text_parts)
    return text, str(metadata_title).strip() or _first_line_title(text), tuple(page_starts)


_READERS: dict[str, Callable[[bytes], tuple[str, str, tuple[int, ...]]]] = {
    ".txt": read_plain,
    ".md": read_plain,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
}

"""Reading a corpus folder into Documents: one reader per format (text, pdf, docx), bad files skipped with a reason."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import IngestError
from ..records import Document
from .docx import read_docx
from .pdf import read_pdf
from .text import Read, read_html, read_markdown, read_plain
from .titles import fallback_title

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".html", ".htm", ".pdf", ".docx")
# Part of every build's signature: a change to what a reader makes of a file (its text or title) rebuilds
# indexes made by an older one. 2: titles per format, PDF running lines left out, .docx.
READER_VERSION = 2


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


def check_corpus(root: Path) -> int:
    """How many supported files `root` holds; IngestError when it is missing or holds none.

    Cheap (no file is read), so commands call it before loading a model: a command that fails on its
    corpus leaves nothing behind.
    """
    sources, skipped = find_sources(root)
    if not sources:
        found = f" ({len(skipped)} other files skipped)" if skipped else ""
        raise IngestError(f"corpus folder {root} holds no {', '.join(SUPPORTED_SUFFIXES)} files{found}")
    return len(sources)


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
        title=title or fallback_title(source.doc_id, text),
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


_READERS: dict[str, Callable[[bytes], Read]] = {
    ".txt": read_plain,
    ".md": read_markdown,
    ".html": read_html,
    ".htm": read_html,
    ".pdf": read_pdf,
    ".docx": read_docx,
}

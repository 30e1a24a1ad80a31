"""Reading a Word .docx: paragraphs in order, headings as `#` lines, tables as rows of cells."""

from __future__ import annotations

import io
import re

from ..errors import IngestError
from .text import Read
from .titles import first_title, plain_title

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)
# A .docx is a ZIP package; one whose parts would expand past these is a zip bomb, refused before it is opened.
# Word's own packages stay far below: text XML compresses about 5-20x, images hardly at all.
MAX_EXPANDED_BYTES = 256 << 20
MAX_RATIO = 200
MAX_PARTS = 10_000


def check_package(data: bytes) -> None:
    """IngestError if the package would expand past MAX_EXPANDED_BYTES, a large part compresses more than
    MAX_RATIO times, or it holds over MAX_PARTS parts (sizes as its directory declares them: reading a part
    never yields more than its declared size)."""
    import zipfile

    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except Exception as error:  # not a ZIP at all, or a damaged directory
        raise IngestError(f"Word document could not be read: {type(error).__name__}: {error}") from error
    if len(infos) > MAX_PARTS:
        raise IngestError(f"Word document refused: {len(infos)} parts (at most {MAX_PARTS})")
    total = sum(info.file_size for info in infos)
    if total > MAX_EXPANDED_BYTES:
        raise IngestError(f"Word document refused: it would expand to {total} bytes (at most {MAX_EXPANDED_BYTES}); "
                          "a zip bomb?")
    for info in infos:
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(1, info.compress_size):
            raise IngestError(f"Word document refused: part {info.filename} expands {info.file_size} bytes from "
                              f"{info.compress_size} (over {MAX_RATIO}x); a zip bomb?")


def _heading_level(style_name: str) -> int:
    """1-6 for "Title" and "Heading N" paragraphs, 0 for the rest."""
    if style_name.lower() == "title":
        return 1
    match = _HEADING_STYLE.match(style_name.strip())
    return min(int(match.group(1)), 6) if match else 0


def _cell_text(cell) -> str:
    return re.sub(r"\s+", " ", cell.text).strip()


def _table_lines(table) -> list[str]:
    """One line per row, cells joined by " | "; a merged cell that spans columns is named once."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # python-docx repeats a merged cell once per grid column it spans
                continue
            previous = cell._tc
            cells.append(_cell_text(cell))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


def read_docx(data: bytes) -> Read:
    """.docx: one block per paragraph or table, separated by a blank line.

    A heading becomes "## Heading" (its level in hashes), so it is a short line without closing punctuation
    and a passage starts at it, as for the other formats. The title is the document's core-properties title,
    else its first heading, else the plain-text rule on the text.
    """
    import docx
    from docx.table import Table

    check_package(data)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        first_heading = ""
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                rows = _table_lines(item)
                if rows:
                    blocks.append("\n".join(rows))
                continue
            text = re.sub(r"[ \t]+", " ", item.text).strip()
            if not text:
                continue
            level = _heading_level(item.style.name if item.style is not None else "")
            if level:
                first_heading = first_heading or text
                text = "#" * level + " " + text
            blocks.append(text)
        metadata_title = document.core_properties.title or ""
    except Exception as error:  # a damaged package raises zip, XML or KeyError errors alike
        raise IngestError(f"Word document could not be read: {type(error).__name__}: {error}") from error
    text = "\n\n".join(blocks)
    return text, first_title(metadata_title, first_heading, plain_title(text)), ()

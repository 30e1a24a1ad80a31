"""Reading a Word .docx: paragraphs in order, headings as `#` lines, tables as rows of cells."""

from __future__ import annotations

import io
import re

from ..errors import IngestError
from .text import Read
from .titles import first_title, plain_title

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


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

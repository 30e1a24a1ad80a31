"""Reading a PDF: page text without running headers, footers and page numbers, words rejoined across lines."""

from __future__ import annotations

import io
import re
from collections import Counter

from ..errors import IngestError
from .text import Read
from .titles import first_title, plain_title

PAGE_SEPARATOR = "\n\n"
# A line counts as a running header or footer when it stands among the first or last EDGE_LINES lines of more
# than half the pages (digits ignored, so "Page 3 of 9" and "Page 4 of 9" are the same line).
EDGE_LINES = 3
MIN_PAGES_FOR_REPEATS = 3
_PAGE_NUMBER = re.compile(r"^(page\s*)?[-–—(\[]?\s*\d{1,4}\s*[-–—)\]]?(\s*(of|/)\s*\d{1,4})?$", re.IGNORECASE)
# "exam-\nple": a lower-case letter, a hyphen ending the line, a lower-case letter starting the next.
_HYPHENATED = re.compile(r"(?<=[a-zà-ÿ])-[ \t]*\n[ \t]*(?=[a-zà-ÿ])")


_PLACEHOLDER_TITLES = frozenset({"untitled", "untitled document", "title", "document", "(anonymous)"})


def metadata_title(title: object) -> str:
    """The PDF's metadata title, unless a tool's placeholder: "untitled", "Microsoft Word - report.docx"."""
    text = re.sub(r"\s+", " ", str(title or "")).strip()
    text = re.sub(r"^microsoft (word|powerpoint) - ", "", text, flags=re.IGNORECASE)
    return "" if text.lower() in _PLACEHOLDER_TITLES or re.fullmatch(r"[\w\- ]+\.(docx?|pptx?|pdf)", text) else text


def _shape(line: str) -> str:
    """A line with its digits and white space folded, so numbered running lines compare equal."""
    return re.sub(r"\s+", " ", re.sub(r"\d+", "#", line)).strip().lower()


def _is_page_number(line: str) -> bool:
    return bool(_PAGE_NUMBER.match(line.strip()))


_EDGE_NUMBER = re.compile(r"^(\d{1,4})\b|\b(\d{1,4})$")


def _edges(lines: list[str]) -> list[str]:
    content = [line for line in lines if line.strip()]
    return content[:EDGE_LINES] + content[-EDGE_LINES:]


def _edge_number(line: str) -> int | None:
    match = _EDGE_NUMBER.search(line.strip())
    return int(match.group(1) or match.group(2)) if match else None


def page_number_offset(pages: list[list[str]]) -> int | None:
    """The printed page number minus the page's index, when most pages carry one in a top or bottom line.

    This finds running lines that differ page by page: "Chapter 4: Function reference 12" on page 15.
    """
    if len(pages) < MIN_PAGES_FOR_REPEATS:
        return None
    counts: Counter[int] = Counter()
    for index, lines in enumerate(pages):
        numbers = {_edge_number(line) for line in _edges(lines)} - {None}
        counts.update({number - index for number in numbers})
    if not counts:
        return None
    offset, count = counts.most_common(1)[0]
    return offset if count > len(pages) / 2 else None


def running_lines(pages: list[list[str]]) -> set[str]:
    """Shapes of the lines that repeat at the top or the bottom of most pages."""
    if len(pages) < MIN_PAGES_FOR_REPEATS:
        return set()
    counts: Counter[str] = Counter()
    for lines in pages:
        counts.update({_shape(line) for line in _edges(lines) if _shape(line)})
    return {shape for shape, count in counts.items() if count > len(pages) / 2}


def strip_running_lines(lines: list[str], running: set[str], multi_page: bool, page_number: int | None = None,
                        ) -> list[str]:
    """The page's lines without the running headers/footers and page numbers at its top and bottom."""

    def removable(line: str) -> bool:
        return (not line.strip() or _shape(line) in running or (multi_page and _is_page_number(line))
                or (page_number is not None and _edge_number(line) == page_number))

    start, end = 0, len(lines)
    while start < end and start < EDGE_LINES * 2 and removable(lines[start]):
        start += 1
    while end > start and len(lines) - end < EDGE_LINES * 2 and removable(lines[end - 1]):
        end -= 1
    return lines[start:end]


def join_hyphenated(text: str) -> str:
    """Words broken with a hyphen at a line end joined again ("exam-\\nple" -> "example")."""
    return _HYPHENATED.sub("", text)


def clean_pages(raw_pages: list[str]) -> list[str]:
    """Each page's text, running lines and edge page numbers left out, hyphenated words joined, stripped."""
    pages = [raw.splitlines() for raw in raw_pages]
    running = running_lines(pages)
    offset = page_number_offset(pages)
    multi_page = len(pages) > 1
    return [
        join_hyphenated("\n".join(strip_running_lines(
            lines, running, multi_page, None if offset is None else index + offset))).strip()
        for index, lines in enumerate(pages)
    ]


def read_pdf(data: bytes) -> Read:
    """.pdf: each page's cleaned text, pages joined by a blank line, where each page starts recorded.

    The title is the metadata title, else the first line of page one when it looks like a title; a running
    header on page one counts, since it is most often the document's title.
    """
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise IngestError("PDF is encrypted")
        raw_pages = [page.extract_text() or "" for page in reader.pages]
        title = metadata_title(reader.metadata.title if reader.metadata else None)
    except IngestError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as error:
        raise IngestError(f"PDF could not be parsed: {error}") from error
    except Exception as error:  # pypdf raises a wide range of errors on damaged files
        raise IngestError(f"PDF could not be parsed: {type(error).__name__}: {error}") from error
    pages = clean_pages(raw_pages)
    page_starts: list[int] = []
    offset = 0
    for number, page_text in enumerate(pages):
        if number:
            offset += len(PAGE_SEPARATOR)
        page_starts.append(offset)
        offset += len(page_text)
    text = PAGE_SEPARATOR.join(pages)
    first_page = "\n".join(line for line in (raw_pages[0] if raw_pages else "").splitlines()
                           if not _is_page_number(line))
    return text, first_title(title, plain_title(first_page)), tuple(page_starts)

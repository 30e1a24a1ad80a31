"""PDF reading on a generated multi-page PDF: running lines left out, hyphenated words joined, offsets exact."""

from __future__ import annotations

import io

import pytest

from askcorpus.chunk import ChunkParams, chunk_text
from askcorpus.ingest import SourceFile, read_document
from askcorpus.ingest.pdf import clean_pages, join_hyphenated, metadata_title

reportlab = pytest.importorskip("reportlab")


def make_report_pdf(pages: list[list[str]], header: str, footer: str, title: str | None = None) -> bytes:
    """A PDF as a word processor writes it: a running header, the page's lines, a numbered footer."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    if title:
        pdf.setTitle(title)
    width, height = A4
    for number, lines in enumerate(pages, start=1):
        pdf.setFont("Helvetica", 9)
        if number > 1:  # as on most reports, the title page carries no running header
            pdf.drawString(72, height - 40, header)
        pdf.setFont("Helvetica", 11)
        y = height - 90
        for line in lines:
            pdf.drawString(72, y, line)
            y -= 16
        pdf.setFont("Helvetica", 9)
        pdf.drawString(width / 2, 30, footer.format(page=number, pages=len(pages)))
        pdf.showPage()
    pdf.save()
    return out.getvalue()


PAGES = [
    ["Annual Security Review", "", "The province saw a sharp rise in attacks during the",
     "first quarter. Analysts describe the group's recruit-", "ment as opportunistic."],
    ["The second page discusses the leadership of the group", "and its finances in some detail."],
    ["Page three lists the sources consulted for this review."],
    ["The last page holds the conclusions and what comes next."],
]


@pytest.fixture
def report(tmp_path):
    path = tmp_path / "review.pdf"
    path.write_bytes(make_report_pdf(PAGES, "ACME Institute | Quarterly Review", "Page {page} of {pages}"))
    return read_document(SourceFile("review.pdf", path))


def test_running_header_and_page_numbers_are_left_out(report):
    assert "ACME Institute" not in report.text
    assert "Page 1 of 4" not in report.text and "of 4" not in report.text
    assert report.text.startswith("Annual Security Review")
    assert report.title == "Annual Security Review"  # no metadata title: the first line of page one


def test_hyphenated_word_is_joined(report):
    assert "recruitment as opportunistic" in report.text.replace("\n", " ")
    assert "recruit-" not in report.text


def test_page_starts_and_offsets_stay_exact(report):
    assert len(report.page_starts) == 4
    for number, page_text in enumerate(["Annual Security Review", "The second page", "Page three lists",
                                        "The last page"], start=1):
        at = report.text.index(page_text)
        assert report.page_starts[number - 1] == at and report.page_of(at) == number
    passages = chunk_text(report.doc_id, report.text, ChunkParams(size=16, overlap=4, max_tokens=64),
                          lambda texts: [len(t.split()) for t in texts])
    assert len(passages) > 3
    for passage in passages:
        assert report.text[passage.start:passage.end] == passage.text


def test_bare_page_numbers_at_the_bottom_are_left_out(tmp_path):
    path = tmp_path / "numbers.pdf"
    path.write_bytes(make_report_pdf([["First page body."], ["Second page body."]], "", "{page}"))
    document = read_document(SourceFile("numbers.pdf", path))
    assert document.text == "First page body.\n\nSecond page body."


def test_running_lines_numbered_page_by_page_are_left_out():
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    bodies = ["\n".join(f"{words[n]} {word} line" for word in words[:8]) for n in range(6)]
    pages = [f"Chapter 2: Handling {n + 3}\n{body}" for n, body in enumerate(bodies)]
    pages[2] = f"{2 + 3}\n{bodies[2]}"  # a chapter's first page: the bare number
    assert clean_pages(pages) == bodies


def test_lines_repeating_on_only_a_few_pages_stay():
    pages = ["Header\nOne\nbody a", "Other\nTwo\nbody b", "Third\nThree\nbody c", "Header\nFour\nbody d"]
    cleaned = clean_pages(pages)
    assert cleaned[0].startswith("Header") and cleaned[3].startswith("Header")  # 2 of 4 pages: not "most"


def test_placeholder_metadata_titles_are_ignored():
    assert metadata_title("untitled") == "" and metadata_title("Microsoft Word - notes.docx") == ""
    assert metadata_title("Microsoft Word - Annual Review") == "Annual Review"
    assert metadata_title("  The  Review ") == "The Review"


def test_only_lower_case_word_breaks_are_joined():
    assert join_hyphenated("recruit-\nment") == "recruitment"
    assert join_hyphenated("Afghan-\nPakistan border") == "Afghan-\nPakistan border"
    assert join_hyphenated("1990-\n2001") == "1990-\n2001"

"""Word documents: paragraphs in order, headings as `#` lines that start passages, tables as rows; bad files skipped."""

from __future__ import annotations

import io

import pytest

from askcorpus.chunk import ChunkParams, chunk_text
from askcorpus.errors import IngestError
from askcorpus.ingest import SourceFile, load_corpus, read_document

docx = pytest.importorskip("docx")


def make_docx(title: str | None = None) -> bytes:
    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading("Threat Assessment", level=1)
    document.add_paragraph("The group recruited widely in 2021. Its leaders moved between provinces.")
    document.add_heading("Leadership", level=2)
    document.add_paragraph("Sanaullah Ghafari leads the group.")
    table = document.add_table(rows=2, cols=3)
    for row, cells in zip(table.rows, [("Year", "Attacks", "Region"), ("2022", "41", "Kabul")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    document.add_paragraph("")  # empty paragraphs leave no trace
    document.add_paragraph("A closing paragraph after the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _read(tmp_path, data: bytes, name: str = "report.docx"):
    path = tmp_path / name
    path.write_bytes(data)
    return read_document(SourceFile(name, path))


def test_paragraphs_headings_and_tables_in_order(tmp_path):
    document = _read(tmp_path, make_docx())
    assert document.text == (
        "# Threat Assessment\n\n"
        "The group recruited widely in 2021. Its leaders moved between provinces.\n\n"
        "## Leadership\n\n"
        "Sanaullah Ghafari leads the group.\n\n"
        "Year | Attacks | Region\n2022 | 41 | Kabul\n\n"
        "A closing paragraph after the table."
    )
    assert document.page_starts == ()


def test_title_from_properties_else_first_heading(tmp_path):
    assert _read(tmp_path, make_docx(title="Quarterly Review"), "a.docx").title == "Quarterly Review"
    assert _read(tmp_path, make_docx(), "b.docx").title == "Threat Assessment"


def test_a_passage_starts_at_a_heading(tmp_path):
    document = _read(tmp_path, make_docx())
    passages = chunk_text(document.doc_id, document.text, ChunkParams(size=40, overlap=8, max_tokens=64),
                          lambda texts: [len(t.split()) for t in texts])
    assert any(p.text.startswith("## Leadership") for p in passages)
    for passage in passages:
        assert document.text[passage.start:passage.end] == passage.text


@pytest.mark.parametrize("data", [b"PK\x03\x04 not really a zip", b"just some bytes that are not a package"])
def test_corrupt_docx_is_a_clear_error(tmp_path, data):
    with pytest.raises(IngestError, match="Word document could not be read"):
        _read(tmp_path, data)


def test_corpus_skips_a_corrupt_docx_and_keeps_a_good_one(tmp_path):
    (tmp_path / "good.docx").write_bytes(make_docx())
    (tmp_path / "bad.docx").write_bytes(b"PK\x03\x04 broken")
    documents, skipped = load_corpus(tmp_path)
    assert [d.doc_id for d in documents] == ["good.docx"]
    assert [s.doc_id for s in skipped] == ["bad.docx"] and "Word document" in skipped[0].reason

"""Reading each format into text: byte-exact plain text, visible HTML text, PDF pages; bad files skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from askcorpus.errors import IngestError
from askcorpus.ingest import SourceFile, find_sources, load_corpus, read_document


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (no PDF writer library needed)."""
    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % p for p in page_ids) + b"] /Count %d >>" % len(pages))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")
        stream = b"BT /F1 12 Tf 72 720 Td (" + escaped + b") Tj ET"
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            b"/Contents %d 0 R >>" % (page_ids[i] + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title:
        objects.append(b"<< /Title (" + title.encode("latin-1") + b") >>")
        info = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R" % (len(objects) + 1)
    if info:
        out += b" /Info %d 0 R" % info
    out += b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def _read(path: Path, root: Path):
    return read_document(SourceFile(path.relative_to(root).as_posix(), path))


def test_plain_text_is_the_file_decoded_byte_for_byte(tmp_path):
    raw = "Title line\r\n\r\n  Body with CRLF, tabs\tand trailing space  \n\n\n".encode("utf-8")
    path = tmp_path / "a.txt"
    path.write_bytes(raw)
    document = _read(path, tmp_path)
    assert document.text == raw.decode("utf-8")
    assert document.title == "Title line"
    assert document.page_of(5) is None


def test_markdown_title_drops_the_hashes(tmp_path):
    (tmp_path / "notes.md").write_text("# ISKP notes\n\nSome *markdown* text.\n", encoding="utf-8")
    document = _read(tmp_path / "notes.md", tmp_path)
    assert document.title == "ISKP notes"
    assert document.text.startswith("# ISKP notes")


def test_html_keeps_visible_text_only(tmp_path):
    html = """<!doctype html><html><head><title>Security &amp; Report</title>
    <style>body { color: red }</style><script>var hidden = "do not index";</script></head>
    <body><h1>Heading</h1><p>First   paragraph with <b>bold</b> text.</p>
    <noscript>enable js</noscript><ul><li>One</li><li>Two &eacute;</li></ul>
    <script type="application/ld+json">{"x": 1}</script><p>Last.</p></body></html>"""
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    document = _read(path, tmp_path)
    assert document.title == "Security & Report"
    assert document.text == "Heading\n\nFirst paragraph with bold text.\n\nOne\n\nTwo é\n\nLast."
    for hidden in ("do not index", "color: red", "enable js", '"x"'):
        assert hidden not in document.text


def test_pdf_pages_are_recorded(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(["ISKP page one text.", "The Taliban on page two.", "Page three."], title="A Report"))
    document = _read(path, tmp_path)
    assert document.title == "A Report"
    assert len(document.page_starts) == 3
    second = document.text.index("The Taliban")
    assert document.page_of(second) == 2
    assert document.page_of(0) == 1
    assert document.page_of(len(document.text) - 1) == 3
    for start, nxt in zip(document.page_starts, list(document.page_starts[1:]) + [len(document.text)]):
        assert document.text[start:nxt].strip()


@pytest.mark.parametrize(
    "name,data,reason",
    [
        ("latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"), "not valid UTF-8"),
        ("empty.txt", b"", "empty"),
        ("blank.md", b"  \n\n \t", "empty"),
        ("binary.txt", b"abc\x00\x01\x02def", "binary"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "PDF could not be parsed"),
        ("nothing.html", b"<html><script>only()</script></html>", "no text"),
    ],
)
def test_bad_files_raise_a_clear_reason(tmp_path, name, data, reason):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(IngestError, match=reason):
        _read(path, tmp_path)


def test_load_corpus_skips_bad_files_and_keeps_the_rest(tmp_path, caplog):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "good.txt").write_text("A good document.", encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "nested.md").write_text("Nested text.", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden.txt").write_text("never indexed", encoding="utf-8")
    with caplog.at_level("WARNING"):
        documents, skipped = load_corpus(tmp_path)
    assert [d.doc_id for d in documents] == ["good.txt", "sub/deeper/nested.md"]
    reasons = {s.doc_id: s.reason for s in skipped}
    assert set(reasons) == {"bad.txt", "image.png"}
    assert "UTF-8" in reasons["bad.txt"] and "unsupported" in reasons["image.png"]
    assert "bad.txt" in caplog.text


def test_links_that_leave_the_corpus_are_skipped(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret", encoding="utf-8")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "link.txt").symlink_to(outside)
    sources, skipped = find_sources(corpus)
    assert sources == [] and skipped[0].doc_id == "link.txt" and "outside" in skipped[0].reason


def test_missing_corpus_folder_is_a_clear_error(tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        find_sources(tmp_path / "nope")


def test_seeds_read_byte_for_byte(seeds_dir):
    documents, skipped = load_corpus(seeds_dir)
    assert not skipped
    for document in documents:
        assert document.text == (seeds_dir / document.doc_id).read_bytes().decode("utf-8")

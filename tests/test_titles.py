"""Titles per format: HTML <title>/<h1>, PDF metadata/first line, Markdown `#`, plain first line, file name."""

from __future__ import annotations

import pytest

from askcorpus.ingest import SourceFile, load_corpus, read_document
from askcorpus.ingest.titles import is_byline, is_date, opening_title, plain_title, readable_file_name

from test_ingest import make_pdf


def _title(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return read_document(SourceFile(name, path)).title


@pytest.mark.parametrize("line", ["30 Dec", "Saturday, April 20, 2024", "2024-04-20", "April 20, 2024 10:30 am",
                                  "Dec 30th, 2022", "Monday"])
def test_dates_are_recognised(line):
    assert is_date(line)


@pytest.mark.parametrize("line", ["Afghanistan in 2024", "The 9 lives of ISKP", "December talks stall"])
def test_titles_with_numbers_are_not_dates(line):
    assert not is_date(line)


def test_bylines():
    assert is_byline("By") and is_byline("By Jane Doe") and is_byline("Posted by admin")
    assert not is_byline("Byzantine history")


def test_plain_title_is_the_first_line_when_it_looks_like_one():
    assert plain_title("A short title\n\nBody text.") == "A short title"
    assert plain_title("\n\n  Leading blank lines   folded \nbody") == "Leading blank lines folded"
    # A sentence, a long line, a line with a closing full stop: not titles.
    assert plain_title("This is the first sentence of the body.\nMore.") == ""
    assert plain_title(" ".join(["word"] * 40) + "\n") == ""


def test_plain_title_skips_leading_dates_and_bylines():
    assert plain_title("Saturday, April 20, 2024\n\nImportance of cooperation\n\nBody.") == "Importance of cooperation"
    assert plain_title("30 Dec\n\nBy Jane Doe\nThe real title\n") == "The real title"
    # After the date comes a paragraph: no title from the text.
    assert plain_title("30 Dec\n\nFollowing the withdrawal, the Taliban ended up in control of the country.") == ""


@pytest.mark.parametrize("doc_id,readable", [
    ("reports/2023-annual-report.pdf", "Annual report"),
    ("003_ISKP_after_the_defeat_of_ISIS.txt", "ISKP after the defeat of ISIS"),
    ("004_Taliban-ruled_Afghanistan.txt", "Taliban-ruled Afghanistan"),
    ("notes 2.md", "Notes 2"),
    ("004_9b6637ebe242a1f9.txt", ""),  # nothing readable left
])
def test_file_names_made_readable(doc_id, readable):
    assert readable_file_name(doc_id) == readable


def test_plain_text_without_a_title_line_falls_back_to_the_file_name(tmp_path):
    data = b"The first line is a whole sentence that ends with a full stop.\n\nMore text.\n"
    assert _title(tmp_path, "field_notes_2024.txt", data) == "Field notes 2024"


def test_markdown_title_is_the_first_level_one_heading(tmp_path):
    text = "Draft, do not circulate\n\n```\n# not a heading in code\n```\n## Section\n\n# The Real Title #\n\nBody.\n"
    assert _title(tmp_path, "a.md", text.encode()) == "The Real Title"
    assert _title(tmp_path, "b.md", b"Setext Title\n============\n\nBody.\n") == "Setext Title"
    assert _title(tmp_path, "c.md", b"## Only a section\n\nBody text.\n") == "Only a section"


def test_html_title_else_first_h1(tmp_path):
    with_title = b"<html><head><title> Page  title </title></head><body><h1>Heading</h1><p>x</p></body></html>"
    assert _title(tmp_path, "a.html", with_title) == "Page title"
    without = b"<html><body><p>intro</p><h1>The <em>first</em> heading</h1><h1>Second</h1></body></html>"
    assert _title(tmp_path, "b.html", without) == "The first heading"
    assert _title(tmp_path, "the-page.htm", b"<p>Just a paragraph that ends.</p>") == "The page"


def test_pdf_title_from_metadata_else_first_line(tmp_path):
    assert _title(tmp_path, "a.pdf", make_pdf(["Body of page one."], title="Metadata Title")) == "Metadata Title"
    assert _title(tmp_path, "b.pdf", make_pdf(["Annual Security Review", "Page two."])) == "Annual Security Review"


def test_seed_titles_name_their_documents(seeds_dir):
    documents, _ = load_corpus(seeds_dir)
    titles = {d.doc_id: d.title for d in documents}
    for doc_id, title in titles.items():
        assert title != doc_id and not is_date(title) and not title.endswith(".") and len(title) <= 150
    assert titles["002_820a792f755c5fcd.txt"] == (
        "Importance of regional cooperation to counter Islamic State Khorasan (ISKP)")
    # Hash-named, no title line: the opening words, past the date line "30 Dec".
    assert titles["004_9b6637ebe242a1f9.txt"] == "Following the U.S. withdrawal from Afghanistan in late August 2021"


@pytest.mark.parametrize("text,title", [
    ("After the defeat of ISIS (the group), what remains has gone underground. More.", "After the defeat of ISIS (the group)"),
    ("30 Dec\n\nBy Jane Doe\nThe U.S. left in 2021; the Taliban took control. Then more.", "The U.S. left in 2021"),
    ("In 2021, the Taliban took control of the whole country.", "In 2021, the Taliban took control of the whole country"),
    (" ".join(f"w{i}" for i in range(30)) + ".", " ".join(f"w{i}" for i in range(12)) + " …"),
    ("\n\n30 Dec\n", ""),
])
def test_opening_words_title_a_text_without_title_line(text, title):
    assert opening_title(text) == title


def test_a_hash_named_file_without_title_line_is_titled_by_its_opening_words(tmp_path):
    data = b"Following the withdrawal in August, the Taliban ended up in control.\n\nMore.\n"
    assert _title(tmp_path, "004_9b6637ebe242a1f9.txt", data) == "Following the withdrawal in August"
    assert _title(tmp_path, "9b6637ebe242a1f9.txt", b"30 Dec\n") == "9b6637ebe242a1f9.txt"  # nothing else to go by

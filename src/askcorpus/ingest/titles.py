"""A document's title: the rule for each format, and the file name made readable when no rule finds one."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

MAX_TITLE_CHARS = 150
MAX_TITLE_WORDS = 25
# How many leading dates and bylines (and nothing else) a title may follow: "Saturday, April 20, 2024".
_LEADING_LINES = 4

_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
_WEEKDAYS = ("monday tuesday wednesday thursday friday saturday sunday "
             "mon tue tues wed thu thur thurs fri sat sun").split()
_DATE_WORDS = frozenset(_MONTHS + _WEEKDAYS + ["am", "pm", "at", "of", "the", "utc", "gmt", "updated", "published"])
_DATE_TOKEN = re.compile(r"\d{1,4}(st|nd|rd|th)?|\d{1,2}:\d{2}(:\d{2})?|\d{1,4}([-/.]\d{1,4}){1,2}")
_BYLINE = re.compile(r"^(by|posted by|written by|author|authors|words by)\b[:\s]*", re.IGNORECASE)
_HEX_RUN = re.compile(r"^[0-9a-f]{8,}$", re.IGNORECASE)


def clean(text: str) -> str:
    """White space folded to single spaces, ends stripped."""
    return re.sub(r"\s+", " ", text).strip()


def is_date(line: str) -> bool:
    """Only date words, numbers and times: "30 Dec", "Saturday, April 20, 2024", "2024-04-20 10:30"."""
    tokens = [t for t in re.split(r"[\s,|·–—]+", line.strip().lower()) if t]
    if not tokens or not any(ch.isdigit() for ch in line) and not any(t.strip(".") in _WEEKDAYS for t in tokens):
        return False
    return all(t.strip(".") in _DATE_WORDS or _DATE_TOKEN.fullmatch(t.strip(".")) for t in tokens)


def is_byline(line: str) -> bool:
    """ "By", "By Jane Doe", "Posted by …", "Author: …"."""
    return bool(_BYLINE.match(line.strip()))


def looks_like_title(line: str) -> bool:
    """Short, has a letter, and does not end like a sentence (a closing full stop)."""
    line = clean(line)
    return (0 < len(line) <= MAX_TITLE_CHARS and len(line.split()) <= MAX_TITLE_WORDS
            and any(ch.isalpha() for ch in line) and not line.endswith(".")
            and not is_date(line) and not is_byline(line))


def plain_title(text: str) -> str:
    """The first line when it looks like a title, after at most a few leading dates and bylines; else ""."""
    seen = 0
    for raw in text.splitlines():
        line = clean(raw)
        if not line:
            continue
        if is_date(line) or is_byline(line):
            seen += 1
            if seen > _LEADING_LINES:
                return ""
            continue
        return line if looks_like_title(line) else ""
    return ""


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def markdown_title(text: str) -> str:
    """The first `#` heading (or `Title` underlined with `===`); else the plain-text rule."""
    lines = text.splitlines()
    in_fence = False
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = _ATX.match(line)
        if match and len(match.group(1)) == 1:
            return clean(match.group(2))
        following = lines[number + 1] if number + 1 < len(lines) else ""
        if line.strip() and following.strip().startswith("=") and _SETEXT.match(following):
            return clean(line)
    return plain_title(re.sub(r"^ {0,3}#{1,6}[ \t]+", "", text, flags=re.MULTILINE))


def first_title(*candidates: str | None) -> str:
    """The first candidate that is not blank, white space folded."""
    for candidate in candidates:
        if candidate and clean(candidate):
            return clean(candidate)[:MAX_TITLE_CHARS * 2]
    return ""


# An opening shorter than this many words is not cut at a clause break ("In 2021, ..." is no title).
_MIN_OPENING_WORDS = 4
_OPENING_WORDS = 12
_CLAUSE_BREAK = re.compile(r"[,;:]\s|\s[–—-]\s")
_SENTENCE_END = re.compile(r"(?<![A-Z])[.!?](?=\s|$)")


def opening_title(text: str) -> str:
    """The opening words of a text that has no title line: its first sentence (after leading dates and
    bylines) up to the first clause break, or its first twelve words and an ellipsis; "" when it has no words.

    "After the defeat of the Islamic State of Iraq and Syria (ISIS), what remains ..." ->
    "After the defeat of the Islamic State of Iraq and Syria (ISIS)".
    """
    for raw in text.splitlines():
        line = clean(raw)
        if not line or is_date(line) or is_byline(line):
            continue
        end = _SENTENCE_END.search(line)
        sentence = line[: end.start()] if end else line
        for brk in _CLAUSE_BREAK.finditer(sentence):
            head = sentence[: brk.start()].strip()
            if len(head.split()) >= _MIN_OPENING_WORDS:
                sentence = head
                break
        words = sentence.split()
        if len(words) > _OPENING_WORDS or len(sentence) > MAX_TITLE_CHARS:
            return " ".join(words[:_OPENING_WORDS]).rstrip(",;:") + " …"
        return sentence
    return ""


def fallback_title(doc_id: str, text: str) -> str:
    """When no format rule finds a title: the file name made readable, else (a hash-like name) the text's
    opening words, else the file name as it is."""
    return readable_file_name(doc_id) or opening_title(text) or PurePosixPath(doc_id).name


def readable_file_name(doc_id: str) -> str:
    """`reports/2023-annual-report.pdf` -> "Annual report": no folder, suffix, leading number or hash; ""
    when nothing readable is left (`004_9b6637ebe242a1f9.txt`).

    Underscores separate words; hyphens do too, unless the name also has underscores or spaces
    (`003_Taliban-ruled_Afghanistan` -> "Taliban-ruled Afghanistan").
    """
    stem = PurePosixPath(doc_id).stem
    separators = r"[\s_]+" if re.search(r"[\s_]", stem) else r"[\s\-]+"
    words = [w for w in re.split(separators, stem) if w]
    while words and words[0].isdigit():
        words.pop(0)
    words = [w for w in words if not _HEX_RUN.match(w)]
    if not words:
        return ""
    readable = " ".join(words)
    return readable[0].upper() + readable[1:]

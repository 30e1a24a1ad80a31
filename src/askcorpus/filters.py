"""The filter on a search: which documents it may draw passages from, by id, path, format, modified time and title."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Iterable, Mapping

from .errors import FilterError

# The formats a document can have: its file's suffix, lower case, with .htm counted as html.
FORMATS = ("txt", "md", "html", "pdf", "docx")
GLOB_CHARACTERS = frozenset("*?[")
_WORD = re.compile(r"\w+")


def format_of(path: str) -> str:
    """A document's format from its path: "reports/a.PDF" -> "pdf", "b.htm" -> "html"."""
    suffix = PurePosixPath(path).suffix.lower().lstrip(".")
    return "html" if suffix == "htm" else suffix


def title_words(text: str) -> frozenset[str]:
    """The words a title filter compares: runs of letters and digits, case-folded."""
    return frozenset(_WORD.findall(text.casefold()))


def is_glob(path: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in path)


@lru_cache(maxsize=256)
def glob_pattern(glob: str) -> re.Pattern[str]:
    """A glob over corpus-relative paths as a regex: `**` crosses folders (`**/` also matches no folder), `*` and
    `?` stay within one, `[...]` is a character class (`[!...]` negated). Python 3.11's fnmatch lets `*` cross `/`,
    which would make "notes/*" match every file under notes/, so the translation is our own."""
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        elif glob[i] == "[" and (close := glob.find("]", i + 2)) != -1:
            body = glob[i + 1 : close]
            negated = body.startswith("!")
            body = re.sub(r"([\\^\[\]])", r"\\\1", body[1:] if negated else body)
            out.append(("[^" if negated else "[") + body + "]")
            i = close + 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise FilterError(f"filter.{name} must be an ISO 8601 time such as 2025-01-31T12:00:00Z, got {value!r}")
    # A time without an offset is UTC: modification times are absolute, and the server's zone is nobody's business.
    # One with an offset stays as given (equal instants compare and hash alike): converting 0001-01-01T00:00+05:00
    # to UTC would leave the years datetime can hold.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _strings(value: object, name: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise FilterError(f"filter.{name} must be a list of strings, got {value!r}")
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise FilterError(f"filter.{name} must be a list of strings, got {items!r}")
    return frozenset(items)


def _formats(value: object) -> frozenset[str]:
    formats = frozenset(format_of("file." + item.strip().lstrip(".")) for item in _strings(value, "formats"))
    unknown = sorted(formats - set(FORMATS))
    if unknown:
        raise FilterError(f"filter.formats: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return formats


@dataclass(frozen=True)
class Filter:
    """Documents a search may draw from: every field left None keeps every document, and the fields given all have
    to hold (AND). `path` is a prefix of the corpus-relative path ("notes/") or, holding * ? or [, a glob over it
    ("notes/**/*.md"); `title` keeps documents whose title has every one of its words; the times bound the file's
    modification time, modified_after <= mtime < modified_before. Hashable, so what it selects can be cached."""

    doc_ids: frozenset[str] | None = None
    path: str | None = None
    formats: frozenset[str] | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    title: str | None = None

    def __post_init__(self) -> None:
        # Normalised here, once, so that equal filters hash alike whichever shell made them.
        set_ = object.__setattr__
        if self.doc_ids is not None:
            set_(self, "doc_ids", _strings(self.doc_ids, "doc_ids"))
        if self.path is not None:
            if not isinstance(self.path, str):
                raise FilterError(f"filter.path must be a string, got {self.path!r}")
            set_(self, "path", self.path.removeprefix("./").lstrip("/"))
        if self.formats is not None:
            set_(self, "formats", _formats(self.formats))
        for name in ("modified_after", "modified_before"):
            if getattr(self, name) is not None:
                set_(self, name, _utc(getattr(self, name), name))
        if self.title is not None and not isinstance(self.title, str):
            raise FilterError(f"filter.title must be a string, got {self.title!r}")

    @property
    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def needs_mtime(self) -> bool:
        return self.modified_after is not None or self.modified_before is not None

    def matches(self, doc_id: str, title: str, mtime: float | None) -> bool:
        """Whether one document passes; the reference the catalogue's array version is tested against."""
        if self.doc_ids is not None and doc_id not in self.doc_ids:
            return False
        if self.path is not None and not (glob_pattern(self.path).match(doc_id) if is_glob(self.path)
                                          else doc_id.startswith(self.path)):
            return False
        if self.formats is not None and format_of(doc_id) not in self.formats:
            return False
        if self.needs_mtime:
            if mtime is None:
                return False
            if self.modified_after is not None and mtime < self.modified_after.timestamp():
                return False
            if self.modified_before is not None and mtime >= self.modified_before.timestamp():
                return False
        return self.title is None or title_words(self.title) <= title_words(title)

    def to_dict(self) -> dict:
        """The JSON shape the API takes: lists sorted, times in ISO 8601, fields left None left out."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = sorted(value) if isinstance(value, frozenset) else \
                value.isoformat() if isinstance(value, datetime) else value
        return out


FILTER_KEYS = tuple(f.name for f in fields(Filter))
LIST_KEYS = ("doc_ids", "formats")


def filter_from(data: Mapping[str, object] | None) -> Filter | None:
    """A Filter from the API's JSON object (times as ISO strings or datetimes); None when it keeps everything."""
    if not data:
        return None
    unknown = sorted(set(data) - set(FILTER_KEYS))
    if unknown:
        raise FilterError(f"filter.{unknown[0]} is not a filter; the filters are {', '.join(FILTER_KEYS)}")
    values = {key: value for key, value in data.items() if value is not None}
    for name in ("modified_after", "modified_before"):
        if isinstance(values.get(name), str):
            values[name] = _parse_time(values[name], name)
    made = Filter(**values)
    return None if made.is_empty else made


def _parse_time(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(f"filter.{name} must be an ISO 8601 time such as 2025-01-31 or 2025-01-31T12:00:00Z, "
                          f"got {text!r}") from None


def filter_from_pairs(pairs: Iterable[str] | None) -> Filter | None:
    """A Filter from the command line's `--filter key=value` flags: doc_ids and formats may repeat (formats also
    split on commas), every other key is given once."""
    data: dict[str, object] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in FILTER_KEYS:
            raise FilterError(f"--filter {pair!r}: write key=value with key one of {', '.join(FILTER_KEYS)}")
        if key in LIST_KEYS:
            items = [v for v in value.split(",")] if key == "formats" else [value]
            data.setdefault(key, []).extend(item.strip() for item in items if item.strip())  # type: ignore[union-attr]
        elif key in data:
            raise FilterError(f"--filter {key} is given twice; give it once (only doc_ids and formats repeat)")
        else:
            data[key] = value
    return filter_from(data)

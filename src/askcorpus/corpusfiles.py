"""Documents written into and removed from the corpus folder: safe names, formats checked by content, atomic writes."""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from .errors import IngestError
from .ingest import SUPPORTED_SUFFIXES, SourceFile, read_document
from .system import fsync_dir

# An upload's bytes are written here, beside their final name, then renamed: hidden, so never indexed or watched.
TEMP_PREFIX = ".upload-"
MAX_PART_BYTES = 255  # one folder or file name, in UTF-8 (what Linux file systems take)
MAX_PATH_CHARS = 1024
_TEXT_SUFFIXES = (".txt", ".md", ".html", ".htm")
# Signatures of binary formats, to refuse one sent under a text name.
_BINARY_MAGIC = {
    b"%PDF-": "a PDF",
    b"PK\x03\x04": "a ZIP archive (a .docx, .xlsx, ...)",
    b"\xd0\xcf\x11\xe0": "an old Office document (.doc, .xls)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "gzip data",
    b"\x7fELF": "a program",
    b"MZ": "a Windows program",
}
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class Refused(Exception):
    """A document the corpus will not take, with the HTTP status saying why (404, 409, 413, 415, 422)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Stored:
    doc_id: str
    action: Literal["added", "replaced", "removed"]
    bytes: int = 0
    sha256: str | None = None


def safe_doc_id(name: str) -> str:
    """`name` as a document id (a relative path with '/' separators) if it is a safe one, else Refused (422).

    Refused: empty names, NUL and other control or invisible characters (bidirectional overrides, zero-width
    spaces), look-alikes that compatibility normalisation (NFKC) would change (full-width slashes, one-dot
    leaders), backslashes, absolute paths and drive letters, '.' and '..' parts, hidden names (a part starting
    with '.': the corpus never indexes those), names with spaces at either end, and over-long names. The name is
    taken in composed form (NFC), so an accented name from any system is one id.
    """
    if not isinstance(name, str) or not name.strip():
        raise Refused(422, "the document name is empty")
    if "\x00" in name:
        raise Refused(422, "the document name contains a NUL character")
    name = unicodedata.normalize("NFC", name)
    bad = next((c for c in name if unicodedata.category(c) in _REFUSED_CATEGORIES), None)
    if bad is not None:
        raise Refused(422, f"the document name contains the control or invisible character U+{ord(bad):04X}")
    if unicodedata.normalize("NFKC", name) != name:
        raise Refused(422, "the document name contains look-alike characters (it changes under NFKC "
                           "normalisation, e.g. full-width slashes or dot leaders)")
    if "\\" in name:
        raise Refused(422, "the document name contains a backslash; separate folders with '/'")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise Refused(422, "the document name is an absolute path; give a path within the corpus folder")
    if len(name) > MAX_PATH_CHARS:
        raise Refused(422, f"the document name is longer than {MAX_PATH_CHARS} characters")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise Refused(422, "the document name has an empty, '.' or '..' part; it must stay inside the corpus "
                               "folder")
        if part.startswith("."):
            raise Refused(422, f"the name part {part!r} is hidden (starts with '.'); hidden files are never indexed")
        if part != part.strip():
            raise Refused(422, f"the name part {part!r} starts or ends with white space")
        if len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise Refused(422, f"the name part {part[:40]!r}... is longer than {MAX_PART_BYTES} bytes")
    return "/".join(parts)


def name_for_upload(path: str | None, filename: str | None) -> str:
    """The document id an upload asks for: `path` (a folder ending in '/' takes the file's own name), else the
    uploaded file's name, which must be a plain name."""
    filename = (filename or "").strip()
    if path is None or not path.strip():
        if not filename:
            raise Refused(422, "give the document a name: the file's name or the 'path' field")
        if "/" in filename or "\\" in filename:
            raise Refused(422, "the uploaded file's name holds a folder; use the 'path' field for folders")
        return safe_doc_id(filename)
    if path.endswith("/"):
        if not filename or "/" in filename or "\\" in filename:
            raise Refused(422, "'path' names a folder; the uploaded file's name must then be a plain name")
        path = path + filename
    return safe_doc_id(path)


def check_format(doc_id: str, data: bytes) -> None:
    """Refused (415) unless the content is of the kind the name's extension says; the readers then check more."""
    suffix = Path(doc_id).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise Refused(415, f"unsupported format {suffix or '(no extension)'}; the corpus reads "
                           f"{', '.join(SUPPORTED_SUFFIXES)}")
    head = data[:8192]
    if suffix == ".pdf":
        if b"%PDF-" not in data[:1024]:
            raise Refused(415, f"{doc_id} is named .pdf but its content is not a PDF (no %PDF- header)")
    elif suffix == ".docx":
        if not data.startswith(b"PK\x03\x04"):
            raise Refused(415, f"{doc_id} is named .docx but its content is not a ZIP package")
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise Refused(422, f"Word document could not be read: {error}") from None
        if "word/document.xml" not in names:
            raise Refused(415, f"{doc_id} is a ZIP package but not a Word document (no word/document.xml)")
    elif suffix in _TEXT_SUFFIXES:
        for magic, kind in _BINARY_MAGIC.items():
            if head.startswith(magic):
                raise Refused(415, f"{doc_id} is named {suffix} but its content is {kind}")
        if b"\x00" in head:
            raise Refused(415, f"{doc_id} is named {suffix} but its content is binary (NUL bytes), not text")


def read_limited(source: BinaryIO, max_bytes: int) -> bytes:
    """At most `max_bytes` from `source`, or Refused (413) if it holds more."""
    data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Refused(413, f"the document is larger than the upload limit of {max_bytes} bytes")
    return data


def check_document(doc_id: str, data: bytes) -> None:
    """The checks an upload passes before it touches the corpus: its format by content (415), then the reader of
    its format (422 with the reader's reason: corrupt, empty, no text, an archive that would expand too far)."""
    check_format(doc_id, data)
    try:
        read_document(SourceFile(doc_id, Path(doc_id)), data)
    except IngestError as error:
        raise Refused(422, f"{doc_id} cannot be read: {error}") from None


def _target(root: Path, doc_id: str) -> Path:
    """Where `doc_id` lives under `root`; Refused (422) if a folder on the way is a link or not a folder."""
    root = Path(root)
    resolved_root = root.resolve()
    current = root
    for part in doc_id.split("/")[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise Refused(422, f"{current.relative_to(root).as_posix()} is not a plain folder of the corpus")
    target = root / doc_id
    if not target.parent.resolve().is_relative_to(resolved_root):
        raise Refused(422, "the document name leads outside the corpus folder")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise Refused(409, f"{doc_id} exists and is not a plain file")
    return target


def write_document(root: Path, doc_id: str, data: bytes, *, replace: Literal["no", "yes", "only"]) -> Stored:
    """Write `data` as `doc_id` under `root` atomically: a hidden temporary file beside it, fsynced, then renamed
    (or, not replacing, hard-linked: an existing file is never overwritten, even by a racing upload), and the
    folder fsynced. replace: "no" (409 if it exists), "yes", or "only" (404 unless it exists)."""
    target = _target(root, doc_id)
    existed = target.exists()
    if existed and replace == "no":
        raise Refused(409, f"{doc_id} already exists; send overwrite=true to replace it")
    if not existed and replace == "only":
        raise Refused(404, f"no document {doc_id} in the corpus")
    created = [p for p in reversed(target.parents) if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}.tmp"
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace == "no":
            try:
                os.link(temp, target)
            except FileExistsError:
                raise Refused(409, f"{doc_id} already exists; send overwrite=true to replace it") from None
        else:
            os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(target.parent)
    for folder in created:  # new folders' entries are durable in their parents too
        fsync_dir(folder.parent)
    return Stored(doc_id, "replaced" if existed else "added", len(data), hashlib.sha256(data).hexdigest())


def remove_document(root: Path, doc_id: str) -> bool:
    """Delete `doc_id`'s file under `root` (durably); False if there is none."""
    target = _target(root, doc_id)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(target.parent)
    return True

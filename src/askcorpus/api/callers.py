"""Callers and what they may read: the tokens file (ASKCORPUS_TOKENS_FILE), the bearer check in front of the app, and
the filter a caller's read prefixes put on everything it searches, lists and reads (docs/security.md)."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
import tomllib
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError
from ..filters import Filter, is_glob

log = logging.getLogger("askcorpus.api")

# The paths anyone may ask for with tokens on: the liveness check and the page's own files (the page reads nothing
# of the corpus until it searches, and every search needs a token).
PUBLIC_PATHS = frozenset({"/health", "/"})
PUBLIC_PREFIXES = ("/static/",)
# Why a request was refused, the `reason` label of askcorpus_auth_refusals_total: no bearer token, a token the file
# does not hold, a document outside the caller's prefixes, the tokens file unreadable (everyone refused).
REFUSAL_REASONS = ("missing", "unknown", "outside", "unreadable")
# The file is stat'ed on each request and read again when it changed; and at least this often regardless, for an
# editor that rewrote it within one tick of the file system's clock at the same size.
REREAD_SECONDS = 5.0
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[^\x00-\x1f\x7f\"\\]{1,100}$")

# The caller of the request being handled, for code the request reaches without FastAPI's dependencies (the MCP
# tools). Set by CallerMiddleware; None with tokens off.
current_caller: contextvars.ContextVar["Caller | None"] = contextvars.ContextVar("askcorpus_caller", default=None)
SCOPE_KEY = "askcorpus.caller"


@dataclass(frozen=True)
class Caller:
    """One token's holder: its name (for logs), the path prefixes it may read ("" = everything) and whether it may
    reindex and upload."""

    name: str
    read: tuple[str, ...]
    admin: bool = False

    @property
    def reads_everything(self) -> bool:
        return "" in self.read

    def may_read(self, doc_id: str) -> bool:
        return any(doc_id.startswith(prefix) for prefix in self.read)


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    sha256: str


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token, as the tokens file holds it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_prefix(prefix: str) -> str:
    """A read prefix as doc_ids are written: relative to the corpus folder, '/'-separated, no leading './' or '/'."""
    return prefix.replace("\\", "/").removeprefix("./").lstrip("/")


def parse_tokens(text: str, source: str = "the tokens file") -> list[_Entry]:
    """The [[token]] tables of a tokens file; ConfigError naming the table and key when one is malformed."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source} is not valid TOML: {error}") from None
    tables = data.get("token", [])
    unknown = sorted(set(data) - {"token"})
    if unknown or not isinstance(tables, list):
        raise ConfigError(f"{source}: only [[token]] tables belong here, found {(unknown or ['token'])[0]!r}")
    entries, names = [], set()
    for number, table in enumerate(tables, 1):
        where = f"{source}, [[token]] number {number}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} is not a table")
        extra = sorted(set(table) - {"name", "sha256", "read", "admin"})
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r} (the keys are name, sha256, read, admin)")
        name, digest, read, admin = (table.get("name"), table.get("sha256"), table.get("read"),
                                     table.get("admin", False))
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"{where}: name must be a string of 1 to 100 printable characters")
        if name in names:
            raise ConfigError(f"{where}: the name {name!r} is taken by an earlier token")
        if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise ConfigError(f"{where} ({name}): sha256 must be the 64 hex digits of the token's SHA-256, never "
                              "the token itself")
        if not isinstance(read, list) or not all(isinstance(p, str) for p in read):
            raise ConfigError(f'{where} ({name}): read must be a list of path prefixes (read = [""] for everything)')
        if not isinstance(admin, bool):
            raise ConfigError(f"{where} ({name}): admin must be true or false")
        names.add(name)
        prefixes = tuple(dict.fromkeys(normalise_prefix(p) for p in read))
        entries.append(_Entry(Caller(name, prefixes, admin), digest.lower()))
    return entries


class Tokens:
    """The tokens file as the server reads it: stat'ed on each request, read again when it changed (or after
    REREAD_SECONDS), so adding and revoking a token needs no restart. ASKCORPUS_ADMIN_TOKEN, when set, counts as
    one more caller, reading everything and administering. A file that cannot be read or parsed refuses everyone
    (until it is fixed) rather than keep a token its editor meant to revoke."""

    def __init__(self, path: Path, admin_token: str | None = None) -> None:
        self.path = Path(path)
        self._extra = [_Entry(Caller("ASKCORPUS_ADMIN_TOKEN", ("",), True), token_hash(admin_token))] \
            if admin_token else []
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._read_at = 0.0
        self._entries: list[_Entry] = []
        self.error: str | None = None
        self._load(raise_error=True)

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)

    def _load(self, raise_error: bool = False) -> None:
        signature = self._stat()
        try:
            entries = parse_tokens(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, UnicodeDecodeError, ConfigError) as error:
            message = str(error) if isinstance(error, ConfigError) else f"cannot read {self.path}: {error}"
            if raise_error:
                raise ConfigError(f"ASKCORPUS_TOKENS_FILE: {message}") from None
            if message != self.error:
                log.error("tokens file: %s; every request needing a token is refused until it is fixed", message)
            self._entries, self.error = [], message
        else:
            if self.error is not None or self._signature is not None:
                log.info("tokens file %s read again: %d tokens", self.path, len(entries))
            self._entries, self.error = entries, None
        self._signature, self._read_at = signature, time.monotonic()

    def refresh(self) -> None:
        """Read the file again if it changed since the last read (one stat), or if it was read long ago."""
        signature = self._stat()
        if signature != self._signature or time.monotonic() - self._read_at > REREAD_SECONDS:
            with self._lock:
                self._load()

    def entries(self) -> list[_Entry]:
        return [*self._entries, *self._extra]

    def resolve(self, token: str) -> Caller | None:
        """The caller holding `token`, or None. The token's SHA-256 (64 hex digits whatever its length) is compared
        with every stored hash by hmac.compare_digest, and the loop never stops early: the time taken depends on
        neither the token's length nor which entry, if any, matches."""
        self.refresh()
        digest = token_hash(token)
        found: Caller | None = None
        for entry in self.entries():
            if hmac.compare_digest(digest, entry.sha256) and found is None:
                found = entry.caller
        return found


def tokens_for(settings: Any) -> Tokens | None:
    """The server's Tokens, or None with ASKCORPUS_TOKENS_FILE unset (tokens off). ConfigError for a file that
    cannot be read, before the port is taken."""
    path = getattr(settings, "tokens_file", None)
    if path is None:
        return None
    return Tokens(path, getattr(settings, "admin_token", None))


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def bearer_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


class CallerMiddleware:
    """With tokens on, answers 401 (WWW-Authenticate: Bearer) to any request but /health and the page's files that
    carries no token or one the file does not hold, and puts the caller on the request (scope[SCOPE_KEY] and the
    `current_caller` context variable) for the routes to scope what they read. Each refusal is counted by
    `refuse(reason)`."""

    def __init__(self, app: Any, tokens: Tokens | None, refuse: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.refuse = refuse or (lambda reason: None)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if self.tokens is None or scope["type"] != "http" or is_public(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        token = bearer_of(scope.get("headers", ()))
        caller = None if token is None else self.tokens.resolve(token)
        if caller is None:
            if self.tokens.error is not None:
                self.refuse("unreadable")
                await _send_json(send, 503, {"detail": "the server's tokens file cannot be read; see its log"},
                                 [(b"retry-after", b"5")])
                return
            self.refuse("missing" if token is None else "unknown")
            detail = "send a token as 'Authorization: Bearer <token>'" if token is None else "unknown token"
            await _send_json(send, 401, {"detail": detail}, [(b"www-authenticate", b"Bearer")])
            return
        scope[SCOPE_KEY] = caller
        reset = current_caller.set(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            current_caller.reset(reset)


async def _send_json(send: Callable, status: int, data: dict, headers: list[tuple[bytes, bytes]]) -> None:
    from fastapi.responses import JSONResponse

    response = JSONResponse(data, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": [*response.raw_headers, *headers]})
    await send({"type": "http.response.body", "body": response.body})


# Per loaded index (the last few, by identity: an index is not hashable), the filter each set of prefixes makes:
# computed once per build, not per request.
_SCOPES: "OrderedDict[int, tuple[weakref.ref, dict[tuple[str, ...], Filter]]]" = OrderedDict()
_SCOPES_KEPT = 8
_SCOPES_LOCK = threading.Lock()


def scope_filter(caller: Caller | None, index: Any) -> Filter | None:
    """The filter a caller's prefixes put on `index`: None when it reads everything (or tokens are off); one prefix
    is Filter(path=prefix); several (or a prefix holding glob characters, which Filter.path would read as a glob)
    become the doc_ids of `index` under any of them. AND-ed with a request's own filter by Searcher.scoped."""
    if caller is None or caller.reads_everything:
        return None
    if len(caller.read) == 1 and not is_glob(caller.read[0]):
        return Filter(path=caller.read[0])
    with _SCOPES_LOCK:
        held = _SCOPES.get(id(index))
        if held is None or held[0]() is not index:
            held = _SCOPES[id(index)] = (weakref.ref(index), {})
            while len(_SCOPES) > _SCOPES_KEPT:
                _SCOPES.popitem(last=False)
        per_index = held[1]
        made = per_index.get(caller.read)
        if made is None:
            made = Filter(doc_ids=frozenset(d for d in index.documents if caller.may_read(d)))
            per_index[caller.read] = made
        return made


def new_token() -> str:
    return secrets.token_urlsafe(32)


def add_token(path: Path, name: str, read: list[str], admin: bool = False) -> str:
    """A new random token for `name`, its hash appended to the tokens file at `path` (created with mode 0600); the
    token itself is returned, to be shown once, and stored nowhere."""
    import json

    path = Path(path)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    entries = parse_tokens(existing, str(path))
    if not _NAME.match(name):
        raise ConfigError(f"token name {name!r}: 1 to 100 printable characters, no quotes or backslashes")
    if any(entry.caller.name == name for entry in entries):
        raise ConfigError(f"{path} already holds a token named {name!r}: remove its [[token]] table to replace it")
    token = new_token()
    table = (f"{'' if not existing or existing.endswith(chr(10)) else chr(10)}"
             f"{chr(10) if existing.strip() else ''}[[token]]\n"
             f"name = {json.dumps(name, ensure_ascii=False)}\n"
             f"sha256 = \"{token_hash(token)}\"\n"
             f"read = [{', '.join(json.dumps(p, ensure_ascii=False) for p in read)}]\n"
             f"admin = {'true' if admin else 'false'}\n")
    parse_tokens(existing + table, str(path))  # what is appended reads back, or nothing is written
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(table)
    return token

"""Writing a JSON file: the one writer the index's manifest and the encoder's export notes share."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: Path, data: object, *, indent: int | None = None, sync: bool = False) -> None:
    """`data` as UTF-8 JSON at `path`: compact unless `indent` is given (for files people read), flushed to disk
    before returning when `sync` (a caller that syncs a whole folder afterwards need not ask)."""
    with open(path, "w", encoding="utf-8") as handle:
        if indent is None:
            json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(data, handle, ensure_ascii=False, indent=indent)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())

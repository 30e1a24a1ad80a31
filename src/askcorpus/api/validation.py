"""Request validation errors as one readable sentence, plus the structured list."""

from typing import Sequence

from ..config import Settings
from ..errors import QueryError
from ..search import validate_query


def describe_errors(errors: Sequence[dict], settings: Settings) -> str:
    messages = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]  # where the value came from; the field name says enough
        field = str(loc[-1]) if loc else ""
        kind = error.get("type", "")
        value = error.get("input")
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            messages.append(f"request body is not valid JSON ({reason})")
            continue
        if kind == "missing":
            if not loc:
                messages.append('request body is missing: send a JSON object like {"query": "your question"}')
            else:
                messages.append(f"{field} is required")
            continue
        if not loc and isinstance(value, (bytes, bytearray)):
            messages.append("request body must be JSON, sent with Content-Type: application/json")
            continue
        if not loc and kind in ("model_type", "dict_type", "model_attributes_type"):
            messages.append('request body must be a JSON object like {"query": "your question", "k": 10}')
            continue
        if kind == "string_unicode":
            messages.append(f"{field} is not valid Unicode text (it has a lone surrogate escape such as \\ud800)")
            continue
        message = None
        try:
            if field in ("query", "q"):
                validate_query(value, 10, "hybrid", settings)
            elif field == "k":
                validate_query("q", value, "hybrid", settings)
            elif field == "mode":
                validate_query("q", 10, value, settings)
        except QueryError as query_error:
            message = str(query_error)
        if message is None:
            message = f"{'.'.join(str(p) for p in loc) or 'request'}: {error.get('msg', 'is not valid')}"
        messages.append(message)
    return "; ".join(dict.fromkeys(messages)) or "the request is not valid"


def error_items(errors: Sequence[dict]) -> list[dict]:
    return [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
         "type": str(e.get("type", ""))}
        for e in errors
    ]

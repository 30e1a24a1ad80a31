"""docs/configuration.md and `Settings` never drift: one row per setting, with its variable and default."""

from __future__ import annotations

import re
from pathlib import Path

from askcorpus.config import Settings

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(ASKCORPUS_[A-Z0-9_]+)` \| ([^|]+) \|", re.MULTILINE)


def _documented() -> dict[str, str]:
    rows = ROW.findall(PAGE.read_text(encoding="utf-8"))
    names = [name for name, _ in rows]
    assert len(names) == len(set(names)), "a setting has two rows"
    return {name: default.strip() for name, default in rows}


def _shown(value: object) -> str:
    """A default as the page writes it."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def test_every_setting_has_a_row_with_its_default():
    documented = _documented()
    for name, field in Settings.model_fields.items():
        variable = f"ASKCORPUS_{name.upper()}"
        assert variable in documented, f"{variable} has no row in {PAGE.name}"
        assert documented[variable] == _shown(field.default), (
            f"{variable}: the page says {documented[variable]}, Settings says {_shown(field.default)}")


def test_every_row_is_a_setting():
    settings = {f"ASKCORPUS_{name.upper()}" for name in Settings.model_fields}
    assert set(_documented()) - settings == set()


def test_other_documented_variables_are_read_by_the_code():
    """A variable the docs name outside the table (the benchmark's own) must still exist in the code."""
    settings = {f"ASKCORPUS_{name.upper()}" for name in Settings.model_fields}
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "src").rglob("*.py"))
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for variable in set(re.findall(r"ASKCORPUS_[A-Z0-9_]*[A-Z0-9]", page.read_text(encoding="utf-8"))):
            assert variable in settings or f'"{variable}"' in source, (
                f"{page.name} names {variable}, which nothing reads")

"""The documentation's commands parse as the CLI defines them, and its links between pages lead somewhere."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from askcorpus.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A command line in a shell block: an optional prompt and environment settings, then askcorpus and its words.
COMMAND = re.compile(r"^(?:\$ )?(?:[A-Z_]+=\S+ )*(askcorpus [^\n#]*?)\s*(?:#.*)?$", re.MULTILINE)


def _blocks(text: str) -> str:
    return "\n".join(re.findall(r"```(?:sh|console|bash)\n(.*?)```", text, re.DOTALL))


def _commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for command in COMMAND.findall(_blocks(page.read_text(encoding="utf-8"))):
            found.append((page.name, command))
    return found


def test_every_askcorpus_line_of_a_shell_block_is_checked():
    """Each `askcorpus` line of every page's shell blocks reaches the parser below, environment settings before it
    or not: a line the pattern misses would leave its command unchecked."""
    for page in PAGES:
        lines = [line for line in _blocks(page.read_text(encoding="utf-8")).splitlines()
                 if re.search(r"(^|[\s$])askcorpus ", line) and not line.startswith(("#", " "))]
        checked = [command for name, command in _commands() if name == page.name]
        assert len(checked) == len(lines), f"{page.name}: {len(lines)} askcorpus lines, {len(checked)} checked"


@pytest.mark.parametrize("page,command", _commands())
def test_every_command_shown_parses(page, command):
    words = shlex.split(command)[1:]
    try:
        build_parser().parse_args(words)
    except SystemExit as error:  # argparse's way of refusing
        pytest.fail(f"{page}: `{command}` is not a valid askcorpus command ({error})")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_links_between_reference_pages_lead_somewhere():
    for page in sorted((REPO / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#:]+\.md)?(#[^)]+)?\)", page.read_text(encoding="utf-8")):
            path, anchor = target
            linked = (page.parent / path) if path else page
            assert linked.exists(), f"{page.name} links to {path}, which does not exist"
            if anchor:
                assert anchor[1:] in _anchors(linked), f"{page.name} links to {path}{anchor}: no such heading"

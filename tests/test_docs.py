"""The README and docs/: short enough to read, every link and command real, the CLI reference
current, and the pages open in the app's Help window."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_fits_in_one_read() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make quickstart" in text and "make test" in text  # the two set-up commands
    makefile = (ROOT / "Makefile").read_text()
    assert "\nquickstart:" in makefile and "\ntest:" in makefile


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and file.suffix == ".md":
            headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), re.M)]
            assert anchor in headings, f"{page.name} links to a missing heading {target}"


def test_cli_reference_is_generated_from_the_parser() -> None:
    from mistudio.cli.reference import reference

    page = (ROOT / "docs" / "cli-reference.md").read_text()
    assert page == reference(), ("docs/cli-reference.md is out of date: "
                                 "python -m mistudio.cli.reference > docs/cli-reference.md")


def _commands(text: str) -> list[str]:
    """The ``mistudio ...`` lines of the page's code blocks (continuations joined)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in joined.splitlines()
            if line.strip().startswith("mistudio ")]


def test_readme_commands_parse() -> None:
    """Every command of the README's tour exists with the options it shows."""
    from mistudio.cli.parser import build_parser

    commands = _commands((ROOT / "README.md").read_text())
    assert len(commands) >= 12
    for line in commands:
        argv = [a for a in shlex.split(line)[1:] if a != "|"]
        try:
            build_parser().parse_args(argv)
        except SystemExit as err:
            raise AssertionError(f"README command does not parse: {line}") from err


def test_help_window_opens_the_pages_and_follows_links(qtbot: object) -> None:
    from PySide6.QtCore import QUrl

    from mistudio.gui.help_window import HelpWindow

    window = HelpWindow()
    qtbot.addWidget(window)  # type: ignore[attr-defined]
    assert window.folder == ROOT / "docs"
    assert "miStudio documentation" in window.browser.toPlainText()
    window._follow(QUrl("plugins.md"))
    assert window.browser.source().fileName() == "plugins.md"
    assert "entry-point group" in window.browser.toPlainText()
    window.browser.backward()
    assert window.browser.source().fileName() == "index.md"

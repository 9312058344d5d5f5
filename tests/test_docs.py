"""The README and docs/: every relative link resolves, the README stays short and starts with
the two set-up commands, and the reference prose reads as reference, not as a work log.

Pure and offline: only the Markdown files of the tree are read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 250
# Folders that hold no documentation of ours (installed packages, run output, caches).
SKIPPED_DIRS = {".git", ".venv", "out", "data", "node_modules", "__pycache__"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may span lines (an image's alt text does).
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1", re.DOTALL)
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, …
# A heading's inline markup that GitHub drops before making its anchor.
_INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def markdown_files() -> list[Path]:
    """Every Markdown file of the tree (the README, docs/, twiml/ …), installed packages aside."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".")]
        found += [Path(folder) / name for name in files if name.endswith(".md")]
    return sorted(found)


def prose(text: str) -> str:
    """The text outside fenced code blocks (fences blanked, so line numbers still match)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return "\n".join(lines)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation removed
    (letters, digits, ``_``, ``-`` and spaces kept), spaces turned into hyphens."""
    text = _INLINE_LINK.sub(r"\1", heading).replace("`", "")
    text = re.sub(r"[*]|(?<!\w)_|_(?!\w)", "", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for line in prose(path.read_text(encoding="utf-8")).split("\n"):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def links(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, target) of every link outside code, in one file."""
    text = prose(path.read_text(encoding="utf-8"))
    # Inline code is blanked with its length kept, so offsets still give the right line.
    text = _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)
    for match in _LINK.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group("target")


def shown(path: Path) -> str:
    """A path as the tree names it (as given, for a file outside the tree)."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    problems = []
    for line, target in links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{shown(path)}:{line}: {target}"
        if not destination.exists():
            problems.append(f"{where}: no such file")
        elif anchor and destination.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and anchor not in anchors(destination):
            problems.append(f"{where}: no heading with that anchor")
    return problems


def test_the_checker_knows_github_anchors() -> None:
    assert github_slug("Soniox engine (`ENGINE=soniox`)") == "soniox-engine-enginesoniox"
    assert github_slug("8 kHz → 24 kHz (image rejection)") == "8-khz--24-khz-image-rejection"
    assert github_slug("Delay, drops and soak") == "delay-drops-and-soak"
    assert github_slug("`BRIDGE_THREADS` and [scaling](scaling.md)") == "bridge_threads-and-scaling"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## A part\n\n[ok](#a-part) [gone](#no-part) [missing](other.md)\n"
        "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    problems = broken_links(page)
    assert len(problems) == 2
    assert "#no-part: no heading" in problems[0]
    assert "other.md: no such file" in problems[1]


def test_there_is_documentation_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/configuration.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=shown)
def test_every_relative_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


# A file of the tree named in inline code (`bridge/calls/leg.py`), and a module run with -m.
_TREE_PATH = re.compile(r"`((?:bridge|tests|bench|config|demo|docs|twiml)/[^`\s<>*]*)`")
_MODULE = re.compile(r"python3? -m (bridge(?:\.\w+)*)")


def stale_names(path: Path) -> list[str]:
    """Files and ``python -m`` modules a page names that the tree does not have."""
    text = path.read_text(encoding="utf-8")
    missing = [f for f in _TREE_PATH.findall(text) if not (ROOT / f).exists()]
    for module in _MODULE.findall(text):
        base = ROOT / module.replace(".", "/")
        if not (base.with_suffix(".py").exists() or (base / "__main__.py").exists()):
            missing.append(f"python -m {module}")
    return sorted(set(missing))


@pytest.mark.parametrize("path", markdown_files(), ids=shown)
def test_every_file_and_module_named_exists(path: Path) -> None:
    assert stale_names(path) == []


def test_the_checker_finds_stale_names(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "`bridge/app.py` `bridge/webhooks.py` `bridge/<vendor>_engine.py`\n"
        "python -m bridge.sim, python -m bridge.number\n",
        encoding="utf-8",
    )
    assert stale_names(page) == ["bridge/webhooks.py", "python -m bridge.number"]


def test_the_readme_fits_on_a_few_screens() -> None:
    lines = README.read_text(encoding="utf-8").split("\n")
    assert len(lines) < README_MAX_LINES


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    lines = README.read_text(encoding="utf-8").split("\n")
    first_block = next(i for i, line in enumerate(lines) if _FENCE.match(line))
    # Only the title may come before the commands.
    assert [line for line in lines[:first_block] if line.strip()] == [lines[0]]
    assert lines[0].startswith("# ")
    end = next(i for i in range(first_block + 1, len(lines)) if _FENCE.match(lines[i]))
    commands = [line.split("#")[0].strip() for line in lines[first_block + 1 : end]]
    assert [c for c in commands if c] == ["make demo", "make test"]


# Phrases of a work log, not of reference prose: the docs say what is, in the present tense.
_DIARY = re.compile(
    r"\bthis (session|branch)\b|\bissue \d+|\bwe measured\b|\btoday\b|\bon main\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("path", markdown_files(), ids=shown)
def test_the_docs_read_as_reference_not_as_a_log(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(text.split("\n"), start=1)
        if _DIARY.search(line)
    ]
    assert found == []

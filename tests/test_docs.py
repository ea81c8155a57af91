"""The manual: README.md and docs/ link only to files and headings that exist in the repo."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# split so that this file does not cite them itself
OUTSIDE = ("DESIGN" + ".md", "../" + "shared", "/work" + "/")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where brackets are not links."""
    return CODE_SPAN.sub("code", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or c == "_")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def local_links(page: Path) -> list[tuple[str, Path, str]]:
    """(target as written, file it points to, fragment) for each relative link and image."""
    links = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = unquote(target).partition("#")
        links.append((target, (page.parent / path).resolve() if path else page, fragment))
    return links


def broken_links(page: Path) -> list[str]:
    broken = []
    for target, dest, fragment in local_links(page):
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    return broken


def test_slug_follows_github():
    assert slug("Pixels: 8/16-bit and DICOM") == "pixels-816-bit-and-dicom"
    assert slug("`mvmic curves`: rate curves") == "mvmic-curves-rate-curves"
    assert slug("Weights & Biases") == "weights--biases"
    assert slug("See [data](data.md) — λ sweeps") == "see-data--λ-sweeps"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "a.md").write_text("# Top\n\n## Same name\n\n## Same name\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#top) [ok](a.md#same-name-1) ![ok](a.md) [web](https://x.org/y) "
        "`[not a link](nowhere.md)`\n```\n[nor](here.md)\n```\n"
        "[missing](c.md) [bad anchor](a.md#nope) [self](#none)\n"
    )
    assert [b.split(" ")[0] for b in broken_links(page)] == ["c.md", "a.md#nope", "#none"]


def test_every_relative_link_and_image_resolves():
    assert len(PAGES) > 10, "the manual is in docs/"
    broken = {p.relative_to(ROOT).as_posix(): broken_links(p) for p in PAGES}
    assert not {page: links for page, links in broken.items() if links}


def test_readme_is_short_and_every_page_is_reachable_from_it():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
    reached, todo = set(), [(ROOT / "README.md").resolve()]
    while todo:
        page = todo.pop()
        if page in reached or page.suffix != ".md" or not page.exists():
            continue
        reached.add(page)
        todo += [dest for _, dest, _ in local_links(page)]
    assert [p.relative_to(ROOT) for p in PAGES if p.resolve() not in reached] == []


def test_nothing_cites_a_file_outside_the_repository():
    files = [
        *PAGES,
        *(ROOT / "configs").rglob("*.yaml"),
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
    ]
    for folder in ("mvmic", "data_modules", "tools", "tests"):
        files += (ROOT / folder).rglob("*.py")
    cited = [
        f"{f.relative_to(ROOT)}: {needle}"
        for f in files
        for needle in OUTSIDE
        if needle in f.read_text(errors="replace")
    ]
    assert not cited

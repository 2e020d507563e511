"""Check the local links of the built site: every href and src that points into the site
names a file that exists and, where it has a fragment, an id on that page.

    python docs/check_links.py docs/_build/html

Exit status 0 when every local link resolves, 1 otherwise (each broken one is listed). Links
to other sites are not followed: the build machine has no network, and they are not ours.
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: Schemes and prefixes that leave the site.
EXTERNAL = ("http", "https", "mailto", "ftp", "data", "javascript", "tel")


class _Page(HTMLParser):
    """The ids a page defines and the links it makes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src") and tag in ("a", "img", "link", "script", "source"):
                self.links.append((tag, value))


def parse(path: Path) -> _Page:
    """The ids and links of one HTML file."""
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _pages(site: Path) -> list[Path]:
    """The site's pages: every HTML file outside the theme's own assets (``_static``)."""
    return [p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts]


def broken_links(site: Path) -> list[str]:
    """``"page: link (why)"`` for every local link of the built site that does not resolve.

    Raises
    ------
    FileNotFoundError
        If ``site`` holds no ``index.html`` (the site was not built).
    """
    site = site.resolve()
    if not (site / "index.html").is_file():
        raise FileNotFoundError(f"{site} holds no index.html: build the site first (make docs)")
    pages = {p.resolve(): parse(p) for p in _pages(site)}
    broken = []
    for path, page in pages.items():
        for tag, link in page.links:
            parts = urlsplit(link)
            if parts.scheme in EXTERNAL or link.startswith("//"):
                continue
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site)}: <{tag}> {link}"
            if site not in target.parents and target != site:
                broken.append(f"{where} (leaves the site)")
            elif not target.exists():
                broken.append(f"{where} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where} (no id {parts.fragment!r} on that page)")
    return broken


def main(argv: list[str] | None = None) -> int:
    """Check the site given on the command line; print what is broken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML folder (docs/_build/html)")
    args = parser.parse_args(argv)
    try:
        broken = broken_links(args.site)
    except FileNotFoundError as exc:
        print(f"check_links: {exc}", file=sys.stderr)
        return 2
    pages = len(_pages(args.site))
    if broken:
        print(f"{len(broken)} broken local link(s) in {pages} pages:")
        print("\n".join(f"  {b}" for b in broken))
        return 1
    print(f"every local link of {pages} pages resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())

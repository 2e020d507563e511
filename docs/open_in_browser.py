"""Open the built site's front page, a results page and an algorithm page in headless Chromium.

    python docs/open_in_browser.py docs/_build/html

Each page must load with every image drawn, no console error, its title, and what it is for:
the front page its table of contents, the results page at least one generated table with
its provenance and no dropped-table message, an algorithm page its formulas typeset. Exit
status 0 when every page passes, 1 when one does not, and 0 with a message naming the
install command where there is no Chromium (as the report's browser test skips), unless
``CONVBENCH_REQUIRE_BROWSER=1`` makes that a failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from headless_browser import find_chromium, load_page  # noqa: E402 -- tests/ on the path

#: The pages opened, with what each must show (JavaScript expressions and their minimum).
PAGES = {
    "index.html": {"title": "convbench",
                   "checks": {"toc_links": "document.querySelectorAll('.toctree-wrapper a,"
                                           " nav a').length"}},
    "results/vs-onednn.html": {"title": "Against oneDNN",
                               "checks": {"tables": "document.querySelectorAll("
                                                    "'table.results').length",
                                          "provenance": "document.querySelectorAll("
                                                        "'.results-provenance').length"}},
    # MathJax is served from the site: its formulas must render with no network.
    "algorithms/fft.html": {"title": "FFT",
                            "checks": {"formulas": "document.querySelectorAll("
                                                   "'mjx-container').length"}},
}
DROPPED = "document.body.innerText.includes('Table dropped')"


def check_page(binary: str, page: Path, title: str, checks: dict[str, str]) -> list[str]:
    """What is wrong with ``page`` as Chromium shows it (empty: nothing)."""
    report = load_page(binary, page, evaluate={**checks, "dropped": DROPPED})
    problems = [f"image not drawn: {src}" for src in report.broken_images]
    problems += report.console_errors
    if title not in report.title:
        problems.append(f"title {report.title!r} does not contain {title!r}")
    for name in checks:
        if not report.values.get(name):
            problems.append(f"{name}: none on the page")
    if report.values.get("dropped"):
        problems.append("a results table was dropped (a file the page asks for is missing)")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Open the pages of the site given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built HTML folder (docs/_build/html)")
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        message = ("no headless Chromium: the browser check of the site is skipped "
                   "(as root: apt-get install chromium; or set CONVBENCH_CHROMIUM)")
        print(message)
        return 1 if os.environ.get("CONVBENCH_REQUIRE_BROWSER") == "1" else 0
    failed = 0
    for name, want in PAGES.items():
        page = args.site / name
        if not page.is_file():
            print(f"{name}: not built")
            failed += 1
            continue
        problems = check_page(binary, page, want["title"], want["checks"])
        print(f"{name}: " + ("opened, as a reader sees it" if not problems else
                             "; ".join(problems)))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

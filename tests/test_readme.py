"""The README stays short, its links lead somewhere, and its table of what convbench covers
says what the registry holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from convbench import registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: Where a newcomer must get from the README in one link.
NEWCOMER_PAGES = {
    "benchmark their own PyTorch model": "docs/guide/models.md",
    "gate their CI on accuracy": "docs/guide/check-in-ci.md",
    "what ~ and ≈ mean in a table": "docs/guide/reading-tables.md",
    "how the GPU side is run": "docs/guide/gpu.md",
}
BACKEND_COLUMNS = {"cpu": 3, "gpu": 4}


def test_the_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_every_local_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links no page"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert missing == []


@pytest.mark.parametrize("need, page", NEWCOMER_PAGES.items())
def test_a_newcomer_finds_each_page_in_one_link(need, page):
    assert f"]({page})" in README, f"the README does not link {page} ({need})"
    assert (ROOT / page).is_file()


def _coverage_table() -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"`\w+`", cells[1]):
            rows[cells[1].strip("`")] = cells
    return rows


@pytest.mark.parametrize("backend", ["cpu", "gpu"], ids=["cpu-column", "gpu-column"])
def test_the_coverage_table_lists_every_registered_kernel_with_its_directions(backend):
    table = _coverage_table()
    registered = {k.name: ", ".join(getattr(k, "directions", ("fwd",)))
                  for k in registry.kernels(backend)}
    assert set(registered) <= set(table), "a registered kernel is missing from the README"
    shown = {name: row[BACKEND_COLUMNS[backend]] for name, row in table.items()
             if row[BACKEND_COLUMNS[backend]] != "—"}
    assert shown == registered
    assert all(row[2] == "2-D" for row in table.values())

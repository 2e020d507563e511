"""The report is a web page: open index.html in headless Chromium, as a reader would.

Every image must load (complete, with a natural size) and the console must
show no error. Skipped, with the way to install it, where no Chromium is
found (``make test`` installs Debian's package when it can).
"""

import shutil

import pytest
from headless_browser import find_chromium, load_page
from test_report_tradeoff import tune_records

from convbench.present.report import write_report
from convbench.store.jsonl import write_records

pytest.importorskip("matplotlib", reason="reports need the 'plot' extra")

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no headless Chromium: 'apt-get install chromium' (Debian; "
                             "'make browser' does it as root), or set CONVBENCH_CHROMIUM")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """A report of a tuned run and a plain one: every kind of section and figure."""
    tmp = tmp_path_factory.mktemp("browser")
    tuned, plain = tmp / "tuned.jsonl", tmp / "plain.jsonl"
    write_records(tuned, tune_records())
    write_records(plain, tune_records(tune=False))
    out = tmp / "report"
    write_report([str(tuned), str(plain)], out, title="browser check")
    return out


def test_every_image_loads_and_the_console_shows_no_error(report_dir):
    page = load_page(CHROMIUM, report_dir / "index.html")
    assert page.title == "browser check"
    expected = (report_dir / "index.html").read_text().count("<img ")
    assert len(page.images) == expected == 1 + 2 * 5 + 2  # network, per run, trade-off
    assert {i["src"] for i in page.images} >= {"1-tuned-tradeoff.png", "1-tuned-budgets.png",
                                               "network.png"}
    assert page.broken_images == []
    assert page.console_errors == []


def test_the_check_sees_a_missing_image_and_a_console_error(report_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "1-tuned-budgets.png").unlink()
    index = broken / "index.html"
    index.write_text(index.read_text().replace(
        "</body>", "<script>console.error('planted error')</script></body>"))
    page = load_page(CHROMIUM, index)
    assert page.broken_images == ["1-tuned-budgets.png"]
    assert any("planted error" in e for e in page.console_errors)
    assert any("1-tuned-budgets.png" in e for e in page.console_errors)

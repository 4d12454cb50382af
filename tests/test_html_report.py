"""`fwmatrix report --format html`: one self-contained file, checked in headless Chromium.

The browser loads the drift example's report from disk: every opening and
every finding the audit makes is in the rendered page, the filters hide and
show findings, nothing is fetched, nothing is logged as an error; a matrix of
hostile text renders it as text. Chromium must run in CI
(FWMATRIX_REQUIRE_TOOLS=1, see conftest.require_tool).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from chromium import Browser
from conftest import ROOT, SEED, require_tool
from fwmatrix.audit.findings import audit
from fwmatrix.cli import main
from fwmatrix.cli.rulesetinput import read_input
from fwmatrix.cli.common import load_intent

DRIFT = ROOT / "examples" / "drift" / "edge.nft"
LAB_SCHEMA = json.loads((ROOT / "docs" / "schemas" / "lab.schema.json").read_text())
HOSTILE_TITLE = '<img src=x onerror="document.title=1">"\'&'
HOSTILE_NOTE = "</td><script>window.pwned=1</script><b>bold"


def lab_result(passed_checks: int, failed_checks: int) -> dict:
    checks = [
        {"kind": "open", "name": f"opening-{n}", "row": n, "route": "wan0 → dmz0", "service": "tcp/443", "passed": n <= passed_checks,
         "detail": "<i>answered</i>", "seconds": 0.01, "probes": [{"probe": "tcp 203.0.113.10:443", "outcome": "answered"}]}
        for n in range(1, passed_checks + failed_checks + 1)
    ]
    lab = {"schema": "fwmatrix.lab/1", "matrix": "contact-highway-7", "firewall": "edge", "backend": "nftables", "passed": failed_checks == 0,
           "summary": f"{passed_checks} of {len(checks)} checks passed", "seconds": {"build": 0.1, "load": 0.1, "total": 0.3}, "checks": checks}
    jsonschema.validate(lab, LAB_SCHEMA)  # what `fwmatrix lab --format json` writes
    return lab


def write_report(tmp_path: Path, matrix: Path, *args: str) -> Path:
    out = tmp_path / f"{matrix.stem}.html"
    result = CliRunner().invoke(main, ["report", str(matrix), *args, "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(html: str) -> list[tuple[str, dict]]:
    parser = _Elements()
    parser.feed(html)
    return parser.tags


@pytest.fixture(scope="module")
def browser():
    require_tool("chromium", "chromium")
    with Browser(width=1400, height=900) as b:
        yield b


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    page = write_report(tmp_path, SEED, "--ruleset", str(DRIFT)).read_text()
    tags = elements(page)
    assert [t for t, _ in tags].count("script") == 1
    assert not [a for _, a in tags if a.get("src") or (a.get("href") or "#").partition("#")[0]]  # no resource, no link out
    policy = next(a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert policy.startswith("default-src 'none'") and "script-src 'sha256-" in policy


def test_the_drift_report_in_chromium(tmp_path: Path, browser: Browser) -> None:
    intent = load_intent(str(SEED), None)
    expected = audit(intent, "edge", *read_input(intent, "edge", False, (str(DRIFT),), "auto", (), ()))
    assert expected.findings
    lab = tmp_path / "lab.json"
    lab.write_text(json.dumps(lab_result(5, 1)))
    page = write_report(tmp_path, SEED, "--ruleset", f"edge={DRIFT}", "--lab", str(lab))
    browser.events.clear()
    browser.open(page)
    dom = browser.evaluate("""({
        openings: document.querySelectorAll('#openings tbody tr').length,
        findings: Array.from(document.querySelectorAll('tr.finding')).map(r => [r.dataset.kind, r.dataset.severity, r.querySelector('.message').textContent]),
        labChecks: document.querySelectorAll('tr.lab-check').length,
        labFailed: document.querySelectorAll('tr.lab-check.fail').length,
        svgTexts: Array.from(document.querySelectorAll('#diagram svg text')).map(t => t.textContent),
        shown: document.getElementById('findings-shown').textContent,
    })""")
    assert dom["openings"] == len(intent.matrix.openings)
    assert sorted(map(tuple, dom["findings"])) == sorted((f.kind, f.level, f.message) for f in expected.findings)
    assert dom["labChecks"] == 6 and dom["labFailed"] == 1
    assert {"dmz-ext", "EXT 172.16.10.21", "⇒ https"} <= set(dom["svgTexts"])
    total = len(expected.findings)
    assert dom["shown"] == f"{total} of {total} findings shown"
    # the filters: severity 'high' off, then kind 'excess' off as well
    high = sum(1 for f in expected.findings if f.level == "high")
    excess_not_high = sum(1 for f in expected.findings if f.kind == "excess" and f.level != "high")
    visible = "document.querySelectorAll('tr.finding:not([hidden])').length"
    click = "document.querySelector('input[data-filter=\"{}\"][value=\"{}\"]').click()"
    browser.evaluate(click.format("severity", "high"))
    assert browser.evaluate(visible) == total - high
    browser.evaluate(click.format("kind", "excess"))
    assert browser.evaluate(visible) == total - high - excess_not_high
    assert browser.evaluate("document.getElementById('findings-shown').textContent") == f"{total - high - excess_not_high} of {total} findings shown"
    assert browser.problems() == []
    assert browser.requests() == [page.resolve().as_uri()]  # the page itself, nothing else
    shot = browser.screenshot()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "report.png").write_bytes(shot)


def test_hostile_text_is_text_in_the_browser(tmp_path: Path, write_matrix, browser: Browser) -> None:
    text = SEED.read_text().replace("title: Operator access from the internet (ContaCT Highway 7)", f"title: {json.dumps(HOSTILE_TITLE)}")
    text = text.replace("note: NAT verso NGINX (NAT to NGINX)", f"note: {json.dumps(HOSTILE_NOTE)}")
    page = write_report(tmp_path, Path(write_matrix(text)), "--ruleset", str(DRIFT))
    browser.events.clear()
    browser.open(page)
    dom = browser.evaluate("""({
        title: document.querySelector('header h1').textContent,
        note: document.querySelector('#opening-1 td:last-child').textContent,
        images: document.querySelectorAll('img').length,
        scripts: document.querySelectorAll('script').length,
        bold: Array.from(document.querySelectorAll('b')).filter(b => b.textContent === 'bold').length,
        cells: document.querySelectorAll('#opening-1 td').length,
        pwned: window.pwned === undefined ? null : window.pwned,
        svgTitle: document.querySelector('#diagram svg text').textContent,
    })""")
    assert dom["title"] == HOSTILE_TITLE and dom["note"] == HOSTILE_NOTE
    assert dom["images"] == 0 and dom["scripts"] == 1 and dom["pwned"] is None and dom["bold"] == 0 and dom["cells"] == 9
    assert dom["svgTitle"].startswith(HOSTILE_TITLE)
    assert browser.problems() == []


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_lab = tmp_path / "lab.json"
    bad_lab.write_text('{"schema": "fwmatrix.audit/1"}')
    out = tmp_path / "r.html"
    result = runner.invoke(main, ["report", str(SEED), "--lab", str(bad_lab), "-o", str(out)])
    assert result.exit_code == 2 and "not a lab result" in result.output and not out.exists()
    result = runner.invoke(main, ["report", str(SEED), "--ruleset", f"core={DRIFT}", "-o", str(out)])
    assert result.exit_code == 2 and "no firewall named 'core'" in result.output and not out.exists()


def test_the_harness_sees_errors(tmp_path: Path, browser: Browser) -> None:
    """The checks above can fail: a console error, an exception and a script the policy refuses are seen."""
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'sha256-AAAA'\"></head>"
                    "<body><p>x</p><script>console.error('seen')</script></body></html>")
    browser.events.clear()
    browser.open(page)
    assert any("script" in problem.lower() for problem in browser.problems()), browser.problems()
    page.write_text("<!DOCTYPE html><html><body><script>console.error('seen'); undefinedFunction();</script></body></html>")
    browser.events.clear()
    browser.open(page)
    problems = browser.problems()
    assert any("seen" in p for p in problems) and any(p.startswith("exception") for p in problems), problems


def test_accepted_findings_are_marked_and_filtered(tmp_path: Path, write_matrix, browser: Browser) -> None:
    accept = """
accept:
  - kind: dmz-to-internet
    rule: inet filter forward handle 18
    reason: the DMZ fetches its updates
    owner: netops
    expires: 2999-12-31
  - kind: shadowed
    rule: inet filter forward handle 19
    reason: left for a while
    owner: netops
    expires: 2000-01-01
"""
    matrix = write_matrix(SEED.read_text() + accept)
    page = write_report(tmp_path, Path(matrix), "--ruleset", str(DRIFT))
    browser.events.clear()
    browser.open(page)
    rows = browser.evaluate("Array.from(document.querySelectorAll('tr.finding')).map(r => [r.dataset.kind, r.dataset.status])")
    assert ["dmz-to-internet", "accepted"] in rows and ["shadowed", "expired"] in rows
    assert sum(1 for _, status in rows if status == "standing") == len(rows) - 2
    browser.evaluate("document.querySelector('input[data-filter=\"status\"][value=\"accepted\"]').click()")
    assert browser.evaluate("document.querySelectorAll('tr.finding:not([hidden])').length") == len(rows) - 1
    assert "accepted: netops, until 2999-12-31: the DMZ fetches its updates" in browser.evaluate("document.body.textContent")
    assert browser.problems() == []


def test_without_graphviz_the_page_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fwmatrix.graph.render as render

    monkeypatch.setattr(render, "DOT", "no-such-dot")
    page = write_report(tmp_path, SEED, "--ruleset", str(DRIFT)).read_text()
    assert "<svg" not in page and "no diagram: drawing SVG or PNG needs Graphviz&#x27;s &#x27;dot&#x27;" in page
    assert 'class="finding"' in page  # the rest of the report is there

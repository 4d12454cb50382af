"""fwmatrix lint: findings about the matrix itself, each at the offending line of its YAML."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings

from conftest import ROOT, SEED
from fwmatrix.compile.intent import build_intent
from fwmatrix.review.lint import KINDS, LintReport, fail, lint
from fwmatrix.matrix.loader import load_matrix, load_text
from fwmatrix.review.diff import review
from strategies import matrix_yaml

SEED_TEXT = SEED.read_text()


def run(write_matrix, text: str) -> LintReport:
    return lint(build_intent(load_matrix(write_matrix(text))))


def with_openings(*rows: str, base: str = SEED_TEXT) -> str:
    return base + "".join(f"\n  - {row}\n" for row in rows)


def line_of(text: str, needle: str, after: str = "") -> int:
    """The 1-based line of the first `needle` after the first `after`."""
    start = text.index(after) if after else 0
    return text[: text.index(needle, start)].count("\n") + 1


def kinds(report: LintReport) -> list[tuple[str, str]]:
    return [(f.kind, f.opening.name if f.opening else f.definition[1] if f.definition else "") for f in report.findings]


def test_shipped_matrices() -> None:
    assert lint(build_intent(load_matrix(str(SEED)))).findings == []
    assert lint(build_intent(load_matrix(str(ROOT / "examples" / "shared-proxy" / "matrix.yaml")))).findings == []
    (finding,) = lint(build_intent(load_matrix(str(ROOT / "examples" / "two-firewalls" / "matrix.yaml")))).findings
    assert (finding.kind, finding.level, finding.opening.name, finding.where.line) == ("no-firewall", "medium", "app-to-db", 81)


def test_dmz_towards_the_internet_points_at_the_to_line(write_matrix) -> None:
    text = with_openings("name: nginx-updates\n    from: nginx\n    to: internet\n    service: [tcp/80, tcp/443]")
    (f,) = run(write_matrix, text).findings
    assert (f.kind, f.level) == ("dmz-to-internet", "medium")
    assert f.where.line == line_of(text, "to: internet", after="nginx-updates")
    assert "edge: dmz0 → wan0" in f.message and "connection tracking" in f.message


def test_the_lan_towards_the_internet_is_no_dmz(write_matrix) -> None:
    # the internet reaches no LAN host: the LAN is not a DMZ
    assert run(write_matrix, with_openings("{name: bal-out, from: bal, to: internet, service: tcp/443}")).findings == []


def test_an_opening_inside_one_zone(write_matrix) -> None:
    text = with_openings("{name: local, from: bal, to: msa, service: tcp/8080}")
    (f,) = run(write_matrix, text).findings
    assert (f.kind, f.opening.name, f.where.line) == ("no-firewall", "local", line_of(text, "name: local"))


def test_a_duplicate_row_is_redundant_and_names_the_first(write_matrix) -> None:
    text = with_openings("{name: bal-again, from: nginx, to: bal, service: tcp/80}")
    (f,) = run(write_matrix, text).findings
    assert (f.kind, f.level, f.opening.name, f.covering) == ("redundant", "low", "bal-again", ("nginx-to-bal",))
    assert "'nginx-to-bal' already opens all of its traffic" in f.message


def test_covered_by_two_openings_together(write_matrix) -> None:
    text = with_openings(
        "{name: bal-81, from: nginx, to: bal, service: tcp/81}",
        "{name: bal-80-81, from: nginx, to: bal, service: tcp/80-81}",
    )
    (f,) = run(write_matrix, text).findings
    assert (f.opening.name, f.covering) == ("bal-80-81", ("nginx-to-bal", "bal-81"))
    assert "'nginx-to-bal' and 'bal-81' already open all" in f.message


def test_covering_openings_are_named_minimally_and_all_reported_can_go(write_matrix) -> None:
    # wide covers both narrower rows; the narrow ones are reported, each naming only 'wide'
    text = with_openings(
        "{name: wide, from: nginx, to: lan, service: tcp/1-100}",
        "{name: narrow, from: nginx, to: bal, service: tcp/80}",
    )
    report = run(write_matrix, text)
    assert {(f.opening.name, f.covering) for f in report.findings} == {("narrow", ("wide",)), ("nginx-to-bal", ("wide",))}


def test_a_direct_row_and_a_port_forward_to_the_same_target_cover_nothing_of_each_other(write_matrix) -> None:
    direct = "  - {name: direct-https, from: internet, to: nginx, service: tcp/443}\n\n"
    text = SEED_TEXT.replace("  - name: operator-https\n", direct + "  - name: operator-https\n")
    # a port forward opens its target to translated connections only; the direct row opens it
    # to connections sent to its own address: neither makes the other redundant
    assert [f for f in run(write_matrix, text).findings if f.kind == "redundant"] == []


def test_a_second_identical_port_forward_is_redundant(write_matrix) -> None:
    text = with_openings("name: https-again\n    from: internet\n    to: edge.public\n    service: tcp/443\n    nat: nginx")
    (f,) = run(write_matrix, text).findings
    assert (f.kind, f.opening.name, f.covering) == ("redundant", "https-again", ("operator-https",))


def test_every_port_from_the_internet(write_matrix) -> None:
    text = with_openings("name: all-tcp\n    from: internet\n    to: sipproxy.ext\n    service: [tcp, udp/1-65535, tcp/22]")
    report = run(write_matrix, text)
    assert [(f.kind, f.level) for f in report.findings] == [("broad-from-internet", "high")] * 2
    assert {f.where.line for f in report.findings} == {line_of(text, "service: [tcp, udp", after="all-tcp")}
    assert "every tcp port" in report.findings[0].message and "every udp port" in report.findings[1].message


def test_every_port_from_inside_is_not_broad_from_the_internet(write_matrix) -> None:
    assert run(write_matrix, with_openings("{name: admin, from: cti1, to: nginx, service: tcp}")).findings == []


def test_zone_to_zone(write_matrix) -> None:
    text = with_openings(
        "{name: lan-to-dmz, from: lan, to: dmz-int, service: tcp/22}",
        "{name: in-from-internet, from: internet, to: [dmz-int], service: tcp/22}",
    )
    report = run(write_matrix, text)
    assert [(f.kind, f.level, f.opening.name) for f in report.findings] == [
        ("zone-to-zone", "medium", "lan-to-dmz"),
        ("zone-to-zone", "high", "in-from-internet"),
    ]
    assert report.findings[0].where.line == line_of(text, "name: lan-to-dmz")


def test_zone_to_zone_through_a_group(write_matrix) -> None:
    text = with_openings("{name: g, from: inside, to: dmz-int, service: tcp/22}").replace("groups:\n", "groups:\n  inside: [lan]\n")
    assert kinds(run(write_matrix, text)) == [("zone-to-zone", "g")]


def test_unused_definitions(write_matrix) -> None:
    text = (
        SEED_TEXT.replace("  msa: 10.20.0.30\n", "  msa: 10.20.0.30\n  old-box: 10.20.0.99\n  orphan: 10.20.0.98\n")
        .replace("    note: the CTI servers (CTI1 today)\n", "    note: the CTI servers (CTI1 today)\n  legacy: [old-box]\n")
        .replace("  rtp-int: udp/4000-9999\n", "  rtp-int: udp/4000-9999\n  ftp: tcp/21\n")
    )
    report = run(write_matrix, text)
    assert kinds(report) == [("unused", "old-box"), ("unused", "orphan"), ("unused", "legacy"), ("unused", "ftp")]
    assert all(f.level == "info" for f in report.findings)
    by_name = {f.definition[1]: f for f in report.findings}
    assert by_name["old-box"].where.line == line_of(text, "  old-box:")
    assert by_name["ftp"].where.line == line_of(text, "  ftp:")
    assert "only group 'legacy' names it" in by_name["old-box"].message
    assert by_name["orphan"].message == "host 'orphan' is defined but no opening uses it"


def test_names_used_through_roles_addresses_and_nested_groups(write_matrix) -> None:
    assert lint(build_intent(load_matrix(str(ROOT / "examples" / "shared-proxy" / "matrix.yaml")))).findings == []
    text = SEED_TEXT.replace("    members: [cti1]\n", "    members: [inner]\n").replace("groups:\n", "groups:\n  inner: [cti1]\n")
    assert run(write_matrix, text).findings == []


def test_findings_come_in_line_order_and_thresholds(write_matrix) -> None:
    text = with_openings(
        "{name: lan-to-dmz, from: lan, to: dmz-int, service: tcp/22}",
        "{name: bal-again, from: nginx, to: bal, service: tcp/80}",
    ).replace("  rtp-int: udp/4000-9999\n", "  rtp-int: udp/4000-9999\n  ftp: tcp/21\n")
    report = run(write_matrix, text)
    assert [f.where.line for f in report.findings] == sorted(f.where.line for f in report.findings)
    assert report.counts() == dict.fromkeys(KINDS, 0) | {"zone-to-zone": 1, "redundant": 1, "unused": 1}
    assert fail(report, "info") and fail(report, "low") and fail(report, "medium") and not fail(report, "high")
    assert report.verdict() == "matrix 'contact-highway-7' has findings: 1 redundant, 1 zone-to-zone, 1 unused"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=matrix_yaml())
def test_lint_never_crashes_and_every_redundant_opening_can_go_at_once(text: str) -> None:
    matrix = load_text(text.encode(), "generated.yaml")
    report = lint(build_intent(matrix))
    for f in report.findings:
        assert f.kind in KINDS and 1 <= f.where.line <= text.count("\n") + 1
    redundant = {f.opening.name for f in report.findings if f.kind == "redundant"}
    if not redundant:
        return
    doc = yaml.safe_load(text)
    doc["openings"] = [o for o in doc["openings"] if o["name"] not in redundant]
    if not doc["openings"]:
        return  # every row repeats another: a matrix needs one
    fewer = load_text(yaml.safe_dump(doc, sort_keys=False).encode(), "fewer.yaml")
    assert not review(build_intent(matrix), build_intent(fewer), "all", "fewer").changed

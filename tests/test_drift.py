"""examples/drift: the audit finds every planted drift, and nothing else."""

from __future__ import annotations

import pytest

from conftest import ROOT, SEED
from fwmatrix.audit.findings import audit
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.targets import read_ruleset

DRIFT = ROOT / "examples" / "drift"

EXPECTED = [
    # (kind, opening or None, words in the message, a region line or None)
    ("missing", "operator-sip", "partly", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5061  ct new dnat"),
    ("excess", None, "no opening asks for it", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/8080  ct new,new dnat"),
    # the forward rules of the port forwards do not ask for the translation
    ("excess", None, "reachable directly", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.10  tcp/443  ct new"),
    ("excess", None, "reachable directly", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5060  ct new"),
    ("excess", None, "reachable directly", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  udp/5060  ct new"),
    ("excess", None, "reachable directly", "wan0 → dmz0  0.0.0.0/0 → 172.16.10.22  udp/10000-30000  ct new"),
    ("excess", None, "no opening asks for it", "lan0 → dmz1  10.20.0.0/16 → 172.16.20.0/24  tcp/22  ct new"),
    ("dmz-to-internet", None, "connection tracking", "dmz0 → wan0  0.0.0.0/0 → 0.0.0.0/0  tcp/80,443  ct new"),
    ("nat", "operator-rtp", "goes to 172.16.10.23, the matrix says 172.16.10.22", None),
    ("nat", None, "port forward to 172.16.10.10 port 8080 that no opening asks for", None),
    ("reply-blocked", "operator-sip", "cannot come back", "dmz0 → wan0  172.16.10.21 → 0.0.0.0/0  udp  ct established dnat"),
    ("reply-blocked", "operator-rtp", "cannot come back", None),
    ("reply-blocked", "sipproxy-to-cti1", "cannot come back", None),
    ("reply-blocked", "rtpproxy-to-msa", "cannot come back", None),
    ("reply-blocked", "cti-to-sipproxy", "cannot come back", None),
    ("reply-blocked", "msa-to-rtpproxy", "cannot come back", None),
    ("shadowed", None, "never match", None),
    ("unmodelled", None, "meta mark", None),
    ("excess", None, "may be forwarded", "lan0 → dmz0  10.20.0.50 → 0.0.0.0/0  any protocol  ct new"),
]


def _report(path):
    intent = build_intent(load_matrix(str(SEED)))
    ruleset, used = read_ruleset(str(path))
    assert used == "nftables"
    return audit(intent, "edge", ruleset, str(path))


def _check(report) -> None:
    remaining = list(report.findings)
    for kind, opening, words, region in EXPECTED:
        match = next(
            (f for f in remaining if f.kind == kind
             and (opening is None or (f.opening is not None and f.opening.name == opening))
             and words in f.message and (region is None or region in f.regions)),
            None,
        )
        assert match is not None, f"not found: {kind} {opening} {words!r} {region!r}\n" + "\n".join(str(f.to_json()) for f in remaining)
        remaining.remove(match)
    assert remaining == [], "unexpected findings:\n" + "\n".join(str(f.to_json()) for f in remaining)


def test_drift_json_listing() -> None:
    report = _report(DRIFT / "edge.json")
    _check(report)
    # every live-rule finding names the rule by its handle
    assert all(f.rule.startswith(("inet filter forward handle", "ip nat prerouting handle")) for f in report.findings if f.rule)


@pytest.mark.kernel
def test_drift_nft_text() -> None:
    _check(_report(DRIFT / "edge.nft"))


def test_markdown_report_is_up_to_date() -> None:
    from fwmatrix.report.text import markdown

    report = _report(DRIFT / "edge.json")
    report.source = "examples/drift/edge.json (nftables)"
    assert (DRIFT / "report.md").read_text() == markdown(report)

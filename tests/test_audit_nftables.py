"""The audit through the kernel, for nftables: compile, load into a namespace, list
back as JSON, parse, audit. Compiled rulesets give no finding; each kind of hand
edit to a loaded ruleset gives exactly its finding."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import ROOT, SEED
from fwmatrix.audit.findings import audit
from fwmatrix.backends import nftables
from fwmatrix.compile.ruleset import compile_intent
from fwmatrix.compile.intent import build_intent
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.netns import NetNamespace
from strategies import matrix_yaml

pytestmark = pytest.mark.kernel


def through_kernel(text: str):
    with NetNamespace() as ns:
        nftables.load(ns, text)
        return nftables.parse_json(nftables.list_ruleset_json(ns))


def audit_text(path, firewall: str, text: str):
    intent = build_intent(load_matrix(str(path)))
    return audit(intent, firewall, through_kernel(text), "kernel")


@pytest.mark.parametrize("path", [SEED, ROOT / "examples" / "two-firewalls" / "matrix.yaml", ROOT / "examples" / "shared-proxy" / "matrix.yaml"], ids=lambda p: p.parent.name)
def test_compiled_rulesets_audit_clean(path) -> None:
    intent = build_intent(load_matrix(str(path)))
    for name, ruleset in compile_intent(intent).items():
        report = audit(intent, name, through_kernel(nftables.render(ruleset)), "kernel")
        assert report.findings == [], [f.to_json() for f in report.findings]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml())
def test_generated_matrices_audit_clean(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("m") / "m.yaml"
    path.write_text(text)
    intent = build_intent(load_matrix(str(path)))
    for name, ruleset in compile_intent(intent).items():
        report = audit(intent, name, through_kernel(nftables.render(ruleset)), "kernel")
        assert report.findings == [], [f.to_json() for f in report.findings]


SEED_TEXT = nftables.render(compile_intent(build_intent(load_matrix(str(SEED))))["edge"])

# (what, edit of the compiled seed ruleset, expected finding kinds, an opening the finding must name or None)
MUTATIONS = [
    ("drop an element", ('\t\t\t172.16.20.21 . 10.20.0.21 . tcp . 5060 comment "sipproxy-to-cti1",\n', ""), ["missing"], "sipproxy-to-cti1"),
    ("widen a port range", ("udp . 4000-9999", "udp . 4000-19999"), ["excess"], None),
    ("change a DNAT target", (': 172.16.10.22', ': 172.16.10.99'), ["nat"], "operator-rtp"),
    ("add an accept", ("\t\tct state invalid drop\n", '\t\tct state invalid drop\n\t\tiifname "dmz0" oifname "wan0" accept\n'), ["dmz-to-internet"], None),
    ("drop before the accepts", ("\t\tct state invalid drop\n", '\t\tct state invalid drop\n\t\tiifname "dmz1" oifname "lan0" drop\n'), ["missing", "missing"], None),
    ("lose established/related", ("\t\tct state established,related accept comment \"replies pass by connection tracking\"\n", ""), ["reply-blocked"] * 8, None),
]


@pytest.mark.parametrize(("what", "edit", "kinds", "opening"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_each_mutation_gives_its_finding(what: str, edit: tuple[str, str], kinds: list[str], opening: str | None) -> None:
    assert edit[0] in SEED_TEXT, f"the compiled seed changed: update the mutation '{what}'"
    report = audit_text(SEED, "edge", SEED_TEXT.replace(edit[0], edit[1], 1))
    assert sorted(f.kind for f in report.findings) == sorted(kinds), [f.to_json() for f in report.findings]
    if opening is not None:
        assert any(f.opening is not None and f.opening.name == opening for f in report.findings)
    for finding in report.findings:
        if finding.kind in ("excess", "dmz-to-internet", "shadowed"):
            assert finding.rule.startswith("inet fwmatrix "), finding.rule  # names the live rule by table, chain and handle

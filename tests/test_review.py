"""fwmatrix diff: what a change opens and closes, in names, per firewall."""

from __future__ import annotations

import random

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SEED
from fwmatrix.compile.intent import build_intent
from fwmatrix.compile.ruleset import Memo, compile_firewall
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.report.text import review_json, review_markdown
from fwmatrix.review.diff import review
from strategies import matrix_yaml

SEED_TEXT = SEED.read_text()


def run(write_matrix, old_text: str, new_text: str):
    old = build_intent(load_matrix(write_matrix(old_text, "old.yaml")))
    new = build_intent(load_matrix(write_matrix(new_text, "new.yaml")))
    return review(old, new, "old.yaml", "new.yaml")


def test_tls_sip_on_a_new_port_and_rtp_moved(write_matrix) -> None:
    new_text = SEED_TEXT.replace("  sip-and-tls: [udp/5060, tcp/5060, tcp/5061]", "  sip-and-tls: [udp/5060, tcp/5060, tcp/5061, tcp/5062]") \
                        .replace("  rtp-ext: udp/10000-30000", "  rtp-ext: udp/20000-40000")
    r = run(write_matrix, SEED_TEXT, new_text)
    assert r.summary() == "opens 3 flows, closes 2, changes 3 NAT on firewall edge"
    (edge,) = r.firewalls
    changes = {c.name: c for c in edge.openings}
    assert changes["operator-sip"].kind == "widened"
    assert changes["operator-sip"].opened == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5062  ct new dnat",)
    assert changes["operator-rtp"].kind == "changed"
    assert changes["operator-rtp"].opened == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.22  udp/30001-40000  ct new dnat",)
    assert changes["operator-rtp"].closed == ("wan0 → dmz0  0.0.0.0/0 → 172.16.10.22  udp/10000-19999  ct new dnat",)
    assert changes["msa-to-rtpproxy"].kind == "changed"
    assert set(changes) == {"operator-sip", "operator-rtp", "msa-to-rtpproxy"}
    assert {(n.kind, n.new or n.old) for n in edge.nat} == {("added", "172.16.10.21"), ("removed", "172.16.10.22"), ("added", "172.16.10.22")}
    assert {d.name: d.moves for d in r.definitions} == {"rtp-ext": ("operator-rtp", "msa-to-rtpproxy"), "sip-and-tls": ("operator-sip",)}
    assert "+\t\t\t0.0.0.0/0 . 172.16.10.21 . tcp . 5062" in edge.ruleset_diffs["edge.nft"]


def test_rename_and_reorder_open_nothing(write_matrix) -> None:
    doc = yaml.safe_load(SEED_TEXT)
    doc["openings"].reverse()
    doc["openings"][0]["name"] = "renamed-row"
    doc["openings"][3]["note"] = "a new note"
    r = run(write_matrix, SEED_TEXT, yaml.safe_dump(doc, sort_keys=False))
    assert not r.changed
    assert r.summary() == "no change in what is open (names, order or notes only)"
    assert r.renames == [("msa-to-rtpproxy", "renamed-row")]
    assert all(c.kind == "renamed" for fw in r.firewalls for c in fw.openings)


def test_a_management_access_change_is_a_definition_change(write_matrix) -> None:
    """The compiled rulesets do not change, but what `apply` keeps reachable does: the review says so."""
    anchor = "    public: 203.0.113.10\n"
    new = SEED_TEXT.replace(anchor, anchor + "    management: [{from: lan, service: tcp/22}]\n")
    r = run(write_matrix, SEED_TEXT, new)
    assert not r.changed
    assert [(d.kind, d.name, d.old, d.new) for d in r.definitions] == [("management", "edge", "(none)", "lan → edge tcp/22")]
    assert r.summary() == "no change in what is open; management access to a firewall changed"


def test_a_host_moving_moves_its_openings(write_matrix) -> None:
    r = run(write_matrix, SEED_TEXT, SEED_TEXT.replace("  bal: 10.20.0.10", "  bal: 10.20.0.11"))
    (edge,) = r.firewalls
    assert [(c.kind, c.name) for c in edge.openings] == [("changed", "nginx-to-bal")]
    assert [(d.kind, d.name, d.old, d.new, d.moves) for d in r.definitions] == [("host", "bal", "10.20.0.10", "10.20.0.11", ("nginx-to-bal",))]


def test_added_and_removed_openings(write_matrix) -> None:
    added = SEED_TEXT + "\n  - {name: monitoring, from: msa, to: nginx, service: icmp}\n"
    r = run(write_matrix, SEED_TEXT, added)
    (edge,) = r.firewalls
    assert [(c.kind, c.name, c.opened) for c in edge.openings] == [("added", "monitoring", ("lan0 → dmz0  10.20.0.30 → 172.16.10.10  icmp  ct new",))]
    back = run(write_matrix, added, SEED_TEXT)
    assert [(c.kind, c.name) for c in back.firewalls[0].openings] == [("removed", "monitoring")]
    assert back.summary() == "closes 1 on firewall edge"


def test_report_forms(write_matrix) -> None:
    r = run(write_matrix, SEED_TEXT, SEED_TEXT.replace("  http: tcp/80", "  http: [tcp/80, tcp/8080]"))
    md = review_markdown(r)
    assert md.startswith("### 🔀 fwmatrix review: opens 1 flow on firewall edge")
    assert "➕ `dmz0 → lan0  172.16.10.10 → 10.20.0.10  tcp/8080`" in md
    data = __import__("json").loads(review_json(r))
    assert data["schema"] == "fwmatrix.diff/1" and data["changed"] is True
    assert data["firewalls"][0]["openings"][0]["name"] == "nginx-to-bal"


def _mutate(text: str, seed: int) -> str:
    """A random edit of a generated matrix: drop, add or change openings."""
    rnd = random.Random(seed)
    doc = yaml.safe_load(text)
    openings = doc["openings"]
    action = rnd.choice(["drop", "add", "port", "swap"])
    if action == "drop" and len(openings) > 1:
        openings.pop(rnd.randrange(len(openings)))
    elif action == "port":
        o = rnd.choice(openings)
        if "nat" not in o:
            o["service"] = "tcp/" + str(rnd.randint(1, 65535))
    elif action == "swap":
        rnd.shuffle(openings)
    else:
        hosts = list(doc["hosts"])
        o = {"name": f"new{seed}", "from": rnd.choice(hosts + ["internet"]), "to": rnd.choice(hosts), "service": f"udp/{rnd.randint(1, 65535)}"}
        host = doc["hosts"][o["to"]]
        if isinstance(host, dict):
            o["to"] += "." + rnd.choice(list(host))
        if isinstance(doc["hosts"].get(o["from"]), dict):
            o["from"] += "." + rnd.choice(list(doc["hosts"][o["from"]]))
        openings.append(o)
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml(), seed=st.integers(0, 10**6))
def test_reported_change_is_the_difference_of_the_intents(write_matrix, text: str, seed: int) -> None:
    r = run(write_matrix, text, _mutate(text, seed))
    for fw in r.firewalls:
        before, after, opened, closed = fw.before, fw.after, fw.opened_space, fw.closed_space
        # the change, applied to the old intent, gives the new one; and it is minimal
        assert before.union(opened).subtract(closed).equals(after)
        assert opened.intersect(before).is_empty() and closed.intersect(after).is_empty()
        # every opened or closed packet is named by some opening's change
        assert bool(fw.opened) == bool(opened) and bool(fw.closed) == bool(closed)
        named = [c for c in fw.openings if c.opened or c.closed]
        assert bool(named) == bool(opened or closed)
    if not r.changed:
        assert r.summary().startswith("no change in what is open")



def test_cli_diff_git_and_exit_code(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "fwmatrix")
    repo = tmp_path / "repo"
    (repo / "matrices").mkdir(parents=True)
    path = repo / "matrices" / "m.yaml"
    path.write_text(SEED_TEXT)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    same = subprocess.run([exe, "diff", str(path), "--git", "HEAD", "--exit-code"], capture_output=True, text=True)
    assert same.returncode == 0 and "no change in what is open" in same.stdout
    path.write_text(SEED_TEXT.replace("  https: tcp/443", "  https: [tcp/443, tcp/8443]"))
    changed = subprocess.run([exe, "diff", "matrices/m.yaml", "--git", "HEAD", "--exit-code", "--format", "markdown"], capture_output=True, text=True, cwd=repo)
    assert changed.returncode == 1, changed.stderr
    assert changed.stdout.startswith("### 🔀 fwmatrix review: opens 1 flow, changes 1 NAT on firewall edge")
    bad = subprocess.run([exe, "diff", str(path), "--git", "no-such-rev"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "no-such-rev" in bad.stderr


def _same_through_a_memo(old_path: str, new_path: str) -> None:
    """The new matrix's rulesets compiled through a memo of the old one's (as `diff` compiles them)
    are the rulesets compiled alone."""
    old, new = build_intent(load_matrix(old_path)), build_intent(load_matrix(new_path))
    for name, fw in new.firewalls.items():
        memo = Memo()
        if name in old.firewalls:
            compile_firewall(old, old.firewalls[name], memo)
        assert compile_firewall(new, fw, memo) == compile_firewall(new, fw)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=matrix_yaml(max_openings=30), other=matrix_yaml(max_openings=30), seeds=st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True))
def test_a_compile_through_a_memo_is_the_compile_alone(write_matrix, text: str, other: str, seeds: list[int]) -> None:
    changed = text
    for seed in seeds:  # a few edits: keys that change, come, go, and wider keys that change under narrower ones
        changed = _mutate(changed, seed)
    _same_through_a_memo(write_matrix(text, "old.yaml"), write_matrix(changed, "new.yaml"))
    _same_through_a_memo(write_matrix(text, "old.yaml"), write_matrix(other, "new.yaml"))  # two unrelated matrices


def test_a_bench_change_compiled_through_a_memo(tmp_path) -> None:
    """The benchmark's change (bench/mutate_matrix.py) of a generated matrix with many layers."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import gen_matrix
    import mutate_matrix

    for seed, firewalls in ((1, 1), (5, 2)):
        text = gen_matrix.generate(1500, seed=seed, firewalls=firewalls)
        old, new = tmp_path / f"old{seed}.yaml", tmp_path / f"new{seed}.yaml"
        old.write_text(text)
        new.write_text(mutate_matrix.mutate(text, 60, 30, 10))
        _same_through_a_memo(str(old), str(new))
        _same_through_a_memo(str(new), str(old))

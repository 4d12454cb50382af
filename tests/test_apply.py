"""`fwmatrix apply`, `confirm` and `rollback` (fwmatrix/ops/apply/, fwmatrix/cli/apply.py).

Kernel tests apply inside a network namespace of their own standing in for
the firewall; the host's own ruleset is compared before and after the
module and must not change. The firewall namespace starts with a foreign
configuration (another nftables table, or another iptables chain, mangle
rule and ipset) and an earlier apply of the seed matrix minus its last
opening, so that "as it was" is a ruleset worth keeping.

pf cannot run here: its apply path runs against a fake firewall that
records the pfctl commands.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT, SEED
from netaddr import IPNetwork

from fwmatrix.ops import apply as applying
from fwmatrix.ops.apply import timer as rollback_timer
from fwmatrix.ops.apply import (
    ApplyError,
    ApplyRequest,
    IptablesDriver,
    LockedError,
    LockoutError,
    NamespaceExecutor,
    NotArmedError,
    StateDir,
    apply,
    arm,
    confirm,
    disarm,
    nft_blocks,
    rollback,
    systemd_argv,
)
from fwmatrix.cli.apply import COMMANDS
from fwmatrix.errors import FwmatrixError
from fwmatrix.ir import Chain, Match, Rule, Ruleset, Table, Verdict
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.ops.management import check as check_access
from fwmatrix.matrix.model import Management, PortRange, Where
from fwmatrix.netns import NetNamespace, unique_name

BACKENDS = ("nftables", "iptables")
SEED_TEXT = SEED.read_text()
LAST_OPENING = "  - name: msa-to-rtpproxy"
V1_TEXT = SEED_TEXT[: SEED_TEXT.index(LAST_OPENING)]  # the seed without its last opening: what runs before
FOREIGN_NFT = "table ip other {\n chain counting {\n  type filter hook forward priority 10; policy accept;\n  tcp dport 9999 counter\n }\n}\n"
FOREIGN_IPT = (
    "*mangle\n-A PREROUTING -p tcp --dport 9999 -j MARK --set-mark 7\nCOMMIT\n"
    "*filter\n:OTHER - [0:0]\n-A FORWARD -j OTHER\n-A OTHER -p tcp --dport 9999 -j RETURN\nCOMMIT\n"
)


@pytest.fixture(scope="module", autouse=True)
def host_untouched() -> Iterator[None]:
    """Nothing here may change the host's own ruleset."""
    def listing() -> str:
        proc = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else f"unreadable: {proc.stderr}"

    if os.geteuid() != 0:
        yield
        return
    before = listing()
    yield
    assert listing() == before, "the host's own ruleset changed"


@pytest.fixture
def firewall() -> Iterator[NamespaceExecutor]:
    with NetNamespace(unique_name("fwmapplyt")) as ns:
        yield NamespaceExecutor(ns.name)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateDir]:
    state = StateDir(tmp_path / "state")
    yield state
    pending = state.pending()
    if pending is not None:  # a test that failed with a rollback armed: no timer may outlive it
        disarm(state, pending)


@pytest.fixture
def v1(tmp_path: Path) -> str:
    path = tmp_path / "v1.yaml"
    path.write_text(V1_TEXT)
    return str(path)


def whole_ruleset(ex: NamespaceExecutor, backend: str) -> str:
    """What the namespace runs, to compare: nft's listing, or iptables-save without counters
    and comments (a table with nothing in it is the same as no table) and the ipsets."""
    if backend == "nftables":
        return ex.run(["nft", "list", "ruleset"]).stdout
    driver = IptablesDriver()
    snap = driver.snapshot(ex)
    saves = []
    for name in driver.SAVES.values():
        sections: dict[str, list[str]] = {}
        table = None
        for line in snap[name].splitlines():
            if line.startswith("*"):
                table = line[1:]
                sections[table] = []
            elif table and line and not line.startswith("#") and line != "COMMIT":
                sections[table].append(re.sub(r"\s*\[\d+:\d+\]$", "", line))
        saves += [f"*{t}\n" + "\n".join(lines) for t, lines in sections.items()
                  if not all(l.startswith(":") and l.split()[1] == "ACCEPT" for l in lines)]
    return "\n".join(saves) + "\n" + snap[driver.IPSETS]


def prepare(ex: NamespaceExecutor, backend: str, v1: str) -> str:
    """A foreign configuration and fwmatrix's ruleset of the matrix before; returns what the namespace runs."""
    if backend == "nftables":
        ex.run(["nft", "-f", "-"], stdin=FOREIGN_NFT)
    else:
        ex.run(["iptables-restore", "--noflush"], stdin=FOREIGN_IPT)
        ex.run(["ipset", "create", "other-set", "hash:ip"])
        ex.run(["ipset", "add", "other-set", "192.0.2.1"])
    _, _, ruleset = applying.load_request(ApplyRequest(v1, "edge", backend))
    driver = applying.DRIVERS[backend]
    driver.load(ex, driver.render(ruleset))
    return whole_ruleset(ex, backend)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def timer_alive(pending: dict) -> bool:
    return rollback_timer._is_timer(pending["pid"], pending["token"])


# -- apply and rollback ---------------------------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_then_rollback_gives_back_the_previous_ruleset(backend: str, firewall, state, v1) -> None:
    before = prepare(firewall, backend, v1)
    started = time.monotonic()
    result = apply(ApplyRequest(str(SEED), "edge", backend), firewall, state)
    applied_in = time.monotonic() - started
    assert result.applied and result.as_predicted
    plan = result.plan
    assert [f.opening.name for f in plan.fixed if f.opening] == ["msa-to-rtpproxy"]  # the one missing opening
    assert plan.after is not None and not plan.after.findings  # the foreign rule only counts packets
    assert "msa-to-rtpproxy" in plan.diff and "nginx-to-bal" not in plan.diff  # only what changes
    now = whole_ruleset(firewall, backend)
    assert now != before and "msa-to-rtpproxy" in now
    assert ("table ip other" in now) if backend == "nftables" else ("-A OTHER" in now and "other-set" in now)
    assert len(state.backup_names()) == 1
    back = rollback(state, firewall)
    assert back.backup.name == result.backup.name
    assert whole_ruleset(firewall, backend) == before
    print(f"{backend}: apply {applied_in * 1000:.0f} ms (load {result.timings['load'] * 1000:.0f} ms), "
          f"rollback {back.seconds * 1000:.0f} ms; steps {({k: round(v * 1000) for k, v in result.timings.items()})}")


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_applying_twice_changes_nothing_the_second_time(backend: str, firewall, state) -> None:
    apply(ApplyRequest(str(SEED), "edge", backend), firewall, state)
    first = whole_ruleset(firewall, backend)
    again = apply(ApplyRequest(str(SEED), "edge", backend), firewall, state)
    assert again.plan.diff == "" and not again.plan.fixed
    assert whole_ruleset(firewall, backend) == first


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_ruleset_compiled_elsewhere_is_applied_as_it_is(backend: str, firewall, state, v1, tmp_path: Path) -> None:
    """`apply --compiled DIR` (a controller's `fwmatrix compile --out-dir DIR`) loads those files; the
    matrix judges them: the seed's own files change nothing after the seed's apply, a file
    with an opening the matrix lacks is applied with that finding predicted and shown."""
    prepare(firewall, backend, v1)
    out = tmp_path / "compiled"
    proc = subprocess.run([sys.executable, "-m", "fwmatrix", "compile", str(SEED), "-f", "edge", "-b", backend, "--out-dir", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    result = apply(ApplyRequest(str(SEED), "edge", backend, compiled=str(out)), firewall, state)
    assert result.applied and result.as_predicted and result.plan.after is not None and result.plan.after.findings == []
    assert "msa-to-rtpproxy" in result.plan.diff
    compiled_here = whole_ruleset(firewall, backend)
    assert apply(ApplyRequest(str(SEED), "edge", backend), firewall, state).plan.diff == ""  # what the firewall compiles itself
    assert whole_ruleset(firewall, backend) == compiled_here
    # the compiled files of the seed without its last opening, judged against the seed: that opening is missing
    subprocess.run([sys.executable, "-m", "fwmatrix", "compile", v1, "-f", "edge", "-b", backend, "--out-dir", str(out)], check=True,
                   capture_output=True)
    older = apply(ApplyRequest(str(SEED), "edge", backend, compiled=str(out)), firewall, state)
    assert {f.kind for f in older.plan.after.findings} == {"missing"}
    assert {f.opening.name for f in older.plan.after.findings} == {"msa-to-rtpproxy"}
    with pytest.raises(FwmatrixError, match=f"no compiled {backend} ruleset for firewall 'edge' .*fwmatrix compile"):
        apply(ApplyRequest(str(SEED), "edge", backend, compiled=str(tmp_path / "nothing")), firewall, state)


@pytest.mark.kernel
def test_dry_run_changes_nothing(firewall, state, v1) -> None:
    before = prepare(firewall, "nftables", v1)
    backups = state.backup_names()
    shown = []
    result = apply(ApplyRequest(str(SEED), "edge", "nftables", dry_run=True), firewall, state, show=shown.append)
    assert not result.applied and shown == [result.plan]
    assert "msa-to-rtpproxy" in result.plan.diff
    assert whole_ruleset(firewall, "nftables") == before
    assert state.backup_names() == backups and state.pending() is None


@pytest.mark.kernel
def test_a_refused_ruleset_is_not_applied(firewall, state, monkeypatch) -> None:
    before = whole_ruleset(firewall, "nftables")
    monkeypatch.setattr(applying.NftDriver, "validate", lambda self, ex, files: ["nft: syntax error, unexpected junk"])
    with pytest.raises(ApplyError, match="refuse the ruleset"):
        apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state)
    assert whole_ruleset(firewall, "nftables") == before and state.backup_names() == []


# -- failures between the steps --------------------------------------------------------------


class FailingLoad:
    """An executor that fails while loading: nftables after its transaction went through
    (the kernel has the new ruleset), iptables between the IPv4 and the IPv6 restore."""

    def __init__(self, inner: NamespaceExecutor):
        self.inner = inner
        self.armed = True

    @property
    def target(self) -> str:
        return self.inner.target

    def run(self, argv, stdin=None, check=True):
        if self.armed and list(argv) == ["ip6tables-restore", "--noflush"]:
            self.armed = False
            raise RuntimeError("injected: ip6tables-restore died")
        proc = self.inner.run(argv, stdin, check)
        if self.armed and list(argv) == ["nft", "-f", "-"]:
            self.armed = False
            raise RuntimeError("injected: the connection dropped after nft -f")
        return proc


STEPS = ["validated", "backed-up", "recorded", "guarded", "during-load", "loaded", "verified", "armed"]
FAILURES = [("nftables", step) for step in STEPS] + [("iptables", step) for step in ("backed-up", "during-load", "verified")]


@pytest.mark.kernel
@pytest.mark.parametrize(("backend", "step"), FAILURES)
def test_a_failure_at_any_step_leaves_the_ruleset_as_it_was(backend: str, step: str, firewall, state, v1) -> None:
    before = prepare(firewall, backend, v1)
    ex = FailingLoad(firewall) if step == "during-load" else firewall
    armed: list[dict] = []

    def checkpoint(name: str) -> None:
        if name == "armed":
            armed.append(state.pending())
        if name == step:
            raise RuntimeError(f"injected at {name}")

    with pytest.raises(Exception, match="injected"):
        apply(ApplyRequest(str(SEED), "edge", backend, confirm=30 if step == "armed" else None), ex, state, checkpoint=checkpoint)
    assert whole_ruleset(firewall, backend) == before
    assert state.pending() is None
    if step == "armed":  # the timer it had started is gone too
        assert armed and wait_for(lambda: not timer_alive(armed[0]))
    if step not in ("validated",):
        event = state.last_event("failed")
        assert event is not None and "injected" in event["error"]
        assert event["restored"] in ("the previous ruleset was restored", "the live ruleset was not changed")


# -- confirm, and the rollback timer -----------------------------------------------------------


@pytest.mark.kernel
def test_confirm_keeps_the_ruleset_and_stops_the_timer(firewall, state) -> None:
    result = apply(ApplyRequest(str(SEED), "edge", "nftables", confirm=2), firewall, state)
    pending = result.pending
    assert pending is not None and pending["timer"] == "detached"
    assert timer_alive(pending)
    assert os.getsid(pending["pid"]) != os.getsid(0)  # a session of its own: a dying SSH session does not take it
    applied = whole_ruleset(firewall, "nftables")
    with pytest.raises(ApplyError, match="a rollback is armed"):
        apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state)
    confirm(state)
    assert state.pending() is None
    assert wait_for(lambda: not timer_alive(pending))  # gone before its deadline: it cannot roll back
    assert whole_ruleset(firewall, "nftables") == applied
    with pytest.raises(NotArmedError, match="no rollback is armed"):
        confirm(state)


def cli_group() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    for command in COMMANDS:
        group.add_command(command)
    return group


CLI = [sys.executable, "-c",
       "import click; from fwmatrix.cli.apply import COMMANDS; click.Group('fwmatrix', commands={c.name: c for c in COMMANDS})()"]


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_timer_rolls_back_after_the_session_is_gone(backend: str, firewall, state, v1) -> None:
    """`fwmatrix apply --confirm 2` in a process that ends at once, like a dropped SSH
    session: the timer still restores the previous ruleset 2 seconds later."""
    before = prepare(firewall, backend, v1)
    started = time.monotonic()
    proc = subprocess.run(CLI + ["apply", str(SEED), "-f", "edge", "-b", backend, "--confirm", "2", "--netns", firewall.name,
                                 "--state-dir", str(state.root)], capture_output=True, text=True, cwd=ROOT / "tests",
                          start_new_session=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "rollback armed" in proc.stdout
    assert whole_ruleset(firewall, backend) != before
    assert wait_for(lambda: state.pending() is None, 60)  # 2 s, but a loaded CI machine may start the timer late
    fired = time.monotonic() - started
    assert whole_ruleset(firewall, backend) == before
    event = state.last_event("rollback")
    assert event is not None and event["reason"] == "not confirmed within 2.0 s"
    assert "restored" in state.log_path.read_text()
    with pytest.raises(NotArmedError, match="rolled back at"):
        confirm(state)
    print(f"{backend}: rolled back {fired:.2f} s after the apply began; the restore took {event['seconds'] * 1000:.0f} ms")


# -- the lock, backups, and where a backup may go ------------------------------------------------


@pytest.mark.kernel
def test_a_second_apply_waits_for_no_one(firewall, state) -> None:
    with state.lock():
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state)
        with pytest.raises(LockedError), state.lock(wait=0.2):
            pass
    assert state.backup_names() == []
    assert apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state).applied  # free again


@pytest.mark.kernel
def test_backups_are_kept_up_to_the_retention_count(firewall, state) -> None:
    made = [apply(ApplyRequest(str(SEED), "edge", "nftables", keep=2), firewall, state).backup.name for _ in range(3)]
    assert state.backup_names() == made[-2:]
    backup = state.latest()
    assert backup is not None and backup.meta["target"] == firewall.target and backup.meta["firewall"] == "edge"
    assert set(backup.meta["files"]) == {"ruleset.nft", "ruleset.json"}
    assert oct(state.root.stat().st_mode & 0o777) == "0o700"


@pytest.mark.kernel
def test_a_backup_is_only_restored_where_it_was_taken(firewall, state) -> None:
    apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state)
    with NetNamespace(unique_name("fwmapplyt")) as other, pytest.raises(FwmatrixError, match="refusing to restore it here"):
        rollback(state, NamespaceExecutor(other.name))


def test_rollback_without_backups_says_so(tmp_path: Path) -> None:
    with pytest.raises(FwmatrixError, match="no backup to roll back to"):
        rollback(StateDir(tmp_path), NamespaceExecutor("fwm-none"))


def test_a_backup_is_named_not_a_path(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "meta.json").write_text('{"backend": "nftables", "target": "host", "files": []}')
    with pytest.raises(FwmatrixError, match="no backup named '../../elsewhere'"):
        state.backup("../../elsewhere")


def test_pruning_keeps_the_backup_an_armed_rollback_needs(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    names = [state.save_backup("nftables", "netns:x", {"ruleset.nft": f"# {i}\n"}).name for i in range(3)]
    state.write_pending({"token": "t", "backup": names[0]})
    assert state.prune(1) == [names[1]]
    assert state.backup_names() == [names[0], names[2]]
    assert state.backup(names[2]).files() == {"ruleset.nft": "# 2\n"}


@pytest.mark.parametrize("fails", [False, True])
def test_the_timer_journals_its_rollback_before_it_disarms(tmp_path: Path, monkeypatch, fails: bool) -> None:
    """Whoever sees the rollback no longer armed (confirm, an operator, the kernel test above,
    which once read the journal in between) finds in the journal what the timer did."""
    state = StateDir(tmp_path)
    name = state.save_backup("nftables", "netns:x", {"ruleset.nft": "# old\n"}).name
    state.write_pending({"token": "t", "backup": name, "target": "netns:x", "seconds": 2.0})

    def restore(*_args: object) -> float:
        if fails:
            raise FwmatrixError("nft: cannot load")
        return 0.01

    seen: list[dict | None] = []
    clear = StateDir.clear_pending
    monkeypatch.setattr(rollback_timer, "executor_for", lambda target: None)
    monkeypatch.setattr(rollback_timer, "restore_backup", restore)
    monkeypatch.setattr(StateDir, "clear_pending", lambda self: (seen.append(self.last_event("rollback", "rollback-failed")), clear(self)))
    assert rollback_timer._restore_unconfirmed(state, "t") == (1 if fails else 0)
    assert state.pending() is None
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0]["event"] == ("rollback-failed" if fails else "rollback")


# -- anti-lockout ----------------------------------------------------------------------------------

MANAGEMENT_FROM_INTERNET = """    management:
      - from: internet
        service: tcp/22
        to: edge.public
        note: the operators' own SSH to the firewall
"""
JUMP_HOST = """
  - name: jump-host
    from: internet
    to: edge.public
    service: tcp/22
    nat: nginx
"""
ADMIN_INPUT = (
    "table inet admin {\n chain input {\n  type filter hook input priority 0; policy drop;\n"
    "  ct state established,related accept\n  iifname \"lo\" accept\n"
    "  iifname \"lan0\" ip saddr 10.20.0.0/16 tcp dport 22 accept\n }\n}\n"
)


def with_management(text: str, management: str, extra_openings: str = "") -> str:
    anchor = "    public: 203.0.113.10\n"
    return text.replace(anchor, anchor + management) + extra_openings


@pytest.mark.kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_refuses_to_forward_the_management_port_away(backend: str, firewall, state, write_matrix) -> None:
    matrix = write_matrix(with_management(SEED_TEXT, MANAGEMENT_FROM_INTERNET, JUMP_HOST))
    before = whole_ruleset(firewall, backend)
    with pytest.raises(LockoutError, match="cut management access") as refused:
        apply(ApplyRequest(matrix, "edge", backend), firewall, state)
    assert "translated away" in str(refused.value) and "--force" in str(refused.value)
    assert whole_ruleset(firewall, backend) == before and state.backup_names() == []
    forced = apply(ApplyRequest(matrix, "edge", backend, force=True), firewall, state)
    assert forced.applied and [v.kept for v in forced.access_live] == [False]


@pytest.mark.kernel
def test_a_ruleset_that_cannot_be_judged_is_refused_not_crashed_on(firewall, state, write_matrix, monkeypatch) -> None:
    """The evaluator failing on a ruleset (say, a jump loop) is a refusal with a reason, and
    --force still applies: the same failure after the load does not undo it."""
    from fwmatrix.audit.evaluate import EvaluationError

    def cannot(*args, **kwargs):
        raise EvaluationError("jumps nest deeper than 64: a loop?")

    monkeypatch.setattr("fwmatrix.ops.management.check", cannot)  # looked up there by the plan and the verify step
    matrix = write_matrix(with_management(SEED_TEXT, "    management: [{from: lan, service: tcp/22}]\n"))
    before = whole_ruleset(firewall, "nftables")
    with pytest.raises(LockoutError, match="cannot be judged.*a loop"):
        apply(ApplyRequest(matrix, "edge", "nftables"), firewall, state)
    assert whole_ruleset(firewall, "nftables") == before and state.backup_names() == []
    forced = apply(ApplyRequest(matrix, "edge", "nftables", force=True), firewall, state)
    assert forced.applied and forced.access_live == []


@pytest.mark.kernel
def test_management_access_is_judged_on_the_input_chains(firewall, state, write_matrix) -> None:
    firewall.run(["nft", "-f", "-"], stdin=ADMIN_INPUT)
    kept = write_matrix(with_management(SEED_TEXT, "    management: [{from: lan, service: tcp/22}]\n"), "kept.yaml")
    result = apply(ApplyRequest(kept, "edge", "nftables"), firewall, state)
    assert result.applied and [v.kept for v in result.plan.access_after] == [True] and [v.kept for v in result.access_live] == [True]
    cut = write_matrix(with_management(SEED_TEXT, "    management:\n      - {from: sipproxy.int, service: tcp/22}\n"), "cut.yaml")
    with pytest.raises(LockoutError, match=r"sipproxy.int → edge tcp/22"):
        apply(ApplyRequest(cut, "edge", "nftables"), firewall, state)
    assert apply(ApplyRequest(cut, "edge", "nftables", force=True), firewall, state).applied


def _rule(*matches: tuple[str, object], verdict: str = "accept") -> Rule:
    return Rule(tuple(Match((f,), ((v,),)) for f, v in matches), Verdict(verdict))


def _admin(hook: str, policy: str, *rules: Rule) -> Ruleset:
    return Ruleset((Table("inet", "admin", (Chain(hook, rules, hook=hook, type="filter", priority=0, policy=policy),)),))


@pytest.mark.parametrize(("ruleset", "kept", "why"), [
    (Ruleset(()), True, ""),
    (_admin("input", "drop"), False, "in on lan0"),
    (_admin("input", "drop", _rule(("iif", "lan0"), ("ip.saddr", IPNetwork("10.20.0.0/16")), ("l4proto", 6), ("dport", PortRange(22, 22)))), True, ""),
    (_admin("input", "drop", _rule(("iif", "dmz1"), ("l4proto", 6), ("dport", PortRange(22, 22)))), False, "in on lan0"),
    (_admin("input", "accept", _rule(("ct.state", "established"), verdict="drop")), False, "ct established"),
    (_admin("output", "drop"), False, "answers out"),
    (_admin("forward", "drop"), True, ""),
])
def test_management_check_reads_input_and_output(ruleset: Ruleset, kept: bool, why: str) -> None:
    matrix = load_matrix(str(SEED))
    access = Management(1, ("lan",), (), ("tcp/22",), "", Where("m.yaml", 3), {})
    (verdict,) = check_access(ruleset, matrix, "edge", [access])
    assert verdict.kept is kept, verdict
    assert why in " ".join(verdict.lost)


def test_apply_judges_the_management_accesses_of_its_firewall(write_matrix) -> None:
    """The accesses come from the loader (`Firewall.management`, docs/matrix-format.md)."""
    text = with_management(SEED_TEXT, MANAGEMENT_FROM_INTERNET)
    intent, accesses, _ = applying.load_request(ApplyRequest(write_matrix(text), "edge"))
    assert accesses == intent.matrix.firewalls["edge"].management
    (access,) = accesses
    assert access.sources == ("internet",) and access.services == ("tcp/22",) and access.destinations == ("edge.public",)
    assert access.where.line == text.splitlines().index("      - from: internet") + 1
    assert applying.load_request(ApplyRequest(str(SEED), "edge"))[1] == ()


# -- pf: the same steps, with pfctl commands, on a fake firewall -----------------------------------------


class FakePf:
    """Answers pfctl as a firewall would; records every command."""

    target = "fake:pf"

    def __init__(self, fail_load: bool = False):
        self.rules = "block drop all\n"
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.fail_load = fail_load

    def run(self, argv, stdin=None, check=True):
        argv = tuple(argv)
        self.calls.append((argv, stdin))
        out = ""
        if argv == ("pfctl", "-f", "-"):
            self.rules = stdin
            if self.fail_load:
                self.fail_load = False
                raise FwmatrixError("pfctl: injected failure after loading")
        elif argv == ("pfctl", "-sT"):
            out = "blocked\n"
        elif argv == ("pfctl", "-t", "blocked", "-T", "show"):
            out = "   192.0.2.1\n   192.0.2.2\n"
        elif argv == ("pfctl", "-sr"):  # rules only: tables are listed apart
            out = "".join(line for line in self.rules.splitlines(keepends=True) if not line.startswith("table <"))
        return subprocess.CompletedProcess(list(argv), 0, out, "")


def test_pf_apply_and_rollback_run_these_pfctl_commands(tmp_path: Path) -> None:
    fw, state = FakePf(), StateDir(tmp_path)
    result = apply(ApplyRequest(str(SEED), "edge", "pf"), fw, state)
    assert result.applied
    commands = [argv for argv, _ in fw.calls]
    read = [("pfctl", "-sT"), ("pfctl", "-t", "blocked", "-T", "show"), ("pfctl", "-sn"), ("pfctl", "-sr")]
    assert commands == [("pfctl", "-nf", "-")] + read + [("pfctl", "-f", "-")] + read
    rendered = fw.calls[0][1]
    assert rendered is not None and "block drop all" in rendered and fw.calls[5][1] == rendered
    saved = result.backup.files()["pf.conf"]
    assert saved == "table <blocked> { 192.0.2.1 192.0.2.2 }\nblock drop all\n"
    fw.calls.clear()
    rollback(state, fw)
    assert fw.calls[0] == (("pfctl", "-f", "-"), saved)


def test_pf_a_failed_load_loads_the_backup_back(tmp_path: Path) -> None:
    fw = FakePf(fail_load=True)
    with pytest.raises(ApplyError, match="the previous ruleset was restored"):
        apply(ApplyRequest(str(SEED), "edge", "pf"), fw, StateDir(tmp_path))
    loads = [stdin for argv, stdin in fw.calls if argv == ("pfctl", "-f", "-")]
    assert len(loads) == 2 and loads[1].startswith("table <blocked>")


def test_pf_management_access_cannot_be_judged_without_force(tmp_path: Path, write_matrix) -> None:
    matrix = write_matrix(with_management(SEED_TEXT, "    management: [{from: lan, service: tcp/22}]\n"))
    with pytest.raises(LockoutError, match="input rules are not modelled"):
        apply(ApplyRequest(matrix, "edge", "pf"), FakePf(), StateDir(tmp_path))
    assert apply(ApplyRequest(matrix, "edge", "pf", force=True), FakePf(), StateDir(tmp_path / "forced")).applied


# -- the timers' commands ------------------------------------------------------------------------------


class Recorder:
    target = "host"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, argv, stdin=None, check=True):
        self.calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, "", "")


def test_a_systemd_timer_is_armed_and_stopped_with_systemd_tools(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    backup = state.save_backup("nftables", "host", {"ruleset.nft": ""})
    host = Recorder()
    pending = arm(state, backup, "host", 90, "systemd", host=host)
    (argv,) = host.calls
    unit = pending["unit"]
    assert argv[:3] == ["systemd-run", "--unit", unit] and "--on-active=90000ms" in argv
    assert argv[argv.index("--") + 1:] == [sys.executable, "-m", "fwmatrix.ops.apply", "timer", "--state-dir", str(tmp_path.resolve()), "--token", pending["token"]]
    assert state.pending() == pending
    disarm(state, pending, host=host)
    assert host.calls[1:] == [["systemctl", "stop", f"{unit}.timer"], ["systemctl", "stop", f"{unit}.service"]]
    assert state.pending() is None
    assert systemd_argv("u", 2.5, ["x"])[-2:] == ["--", "x"]


def test_auto_timer_is_detached_in_a_namespace() -> None:
    assert applying.timer_kind("netns:x") == "detached"
    with pytest.raises(FwmatrixError):
        applying.timer_kind("host", "cron")


def test_no_systemd_timer_from_inside_another_network_namespace(tmp_path: Path) -> None:
    """An apply run in a namespace PID 1 is not in (an sshd or a shell there), its target "host":
    systemd would run the rollback in PID 1's namespace, so auto is detached and systemd refused."""
    for pid, inode in (("self", "net:[1]"), ("1", "net:[2]")):
        (tmp_path / pid / "ns").mkdir(parents=True)
        (tmp_path / pid / "ns" / "net").write_text(inode)  # two files: two inodes, as two namespaces
    assert applying.timer_kind("host", "auto", ns_dir=str(tmp_path)) == "detached"
    with pytest.raises(FwmatrixError, match="not in the network namespace of PID 1"):
        applying.timer_kind("host", "systemd", ns_dir=str(tmp_path))
    assert applying.timer_kind("netns:x", "systemd", ns_dir=str(tmp_path)) == "systemd"  # the record names the namespace
    (tmp_path / "1" / "ns" / "net").unlink()
    (tmp_path / "1" / "ns" / "net").symlink_to(tmp_path / "self" / "ns" / "net")  # one namespace
    assert applying.timer_kind("host", "systemd", ns_dir=str(tmp_path)) == "systemd"
    (tmp_path / "1" / "ns" / "net").unlink()  # cannot be told (/proc/1 unreadable): auto does not take the risk
    assert applying.timer_kind("host", "auto", ns_dir=str(tmp_path)) == "detached"


def test_nft_blocks_splits_a_listing_by_table() -> None:
    listing = "table inet fwmatrix {\n\tchain c {\n\t}\n}\ntable ip other {\n}\n"
    assert nft_blocks(listing) == {("inet", "fwmatrix"): "table inet fwmatrix {\n\tchain c {\n\t}\n}\n", ("ip", "other"): "table ip other {\n}\n"}


# -- the commands ----------------------------------------------------------------------------------


@pytest.mark.kernel
def test_cli_apply_dry_run_apply_rollback_and_confirm(firewall, tmp_path: Path) -> None:
    runner = CliRunner()
    group = cli_group()
    common = ["--netns", firewall.name, "--state-dir", str(tmp_path / "state")]
    dry = runner.invoke(group, ["apply", str(SEED), "-f", "edge", "--dry-run", *common])
    assert dry.exit_code == 0, dry.output
    assert "validated" in dry.output and "fixed by this apply: 6" in dry.output and "dry run: nothing was changed" in dry.output
    done = runner.invoke(group, ["apply", str(SEED), "-f", "edge", *common])
    assert done.exit_code == 0 and "applied in" in done.output and "previous ruleset saved as backup" in done.output
    back = runner.invoke(group, ["rollback", *common])
    assert back.exit_code == 0 and "rolled back to backup" in back.output
    assert firewall.run(["nft", "list", "ruleset"]).stdout == ""
    nothing = runner.invoke(group, ["confirm", "--state-dir", str(tmp_path / "state")])
    assert nothing.exit_code == 1 and "nothing to confirm" in nothing.output


@pytest.mark.kernel
def test_the_armed_hint_names_the_state_directory_and_confirms_as_printed(firewall, tmp_path: Path) -> None:
    """apply --state-dir D --confirm N prints the confirm command with D (quoted for the shell);
    run as printed, it confirms. confirm on another directory that holds nothing says where it
    looked and creates nothing."""
    state = StateDir(tmp_path / "my state")
    try:
        done = subprocess.run(CLI + ["apply", str(SEED), "-f", "edge", "--confirm", "120", "--timer", "detached", "--netns", firewall.name,
                                     "--state-dir", str(state.root)], capture_output=True, text=True, cwd=ROOT / "tests",
                              start_new_session=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        hint = re.search(r"rollback armed: run `([^`]+)` within 120 s", " ".join(done.stdout.split()))
        assert hint is not None, done.stdout
        assert hint.group(1) == f"fwmatrix confirm --state-dir '{state.root}'"
        elsewhere = tmp_path / "default-like"
        nothing = subprocess.run(CLI + ["confirm", "--state-dir", str(elsewhere)], capture_output=True, text=True, check=False)
        assert (nothing.returncode, nothing.stderr) == (1, f"error: nothing to confirm: no rollback is armed in {elsewhere} "
                                                           "(no apply has used it; an apply run with --state-dir DIR is confirmed with --state-dir DIR)\n")
        assert not elsewhere.exists()
        argv = shlex.split(hint.group(1))
        assert argv[0] == "fwmatrix"
        confirmed = subprocess.run(CLI + argv[1:], capture_output=True, text=True, check=False)
        assert confirmed.returncode == 0 and "confirmed: the ruleset applied at" in confirmed.stdout, confirmed.stderr
        assert state.pending() is None
    finally:
        pending = state.pending()
        if pending is not None:
            disarm(state, pending)


def test_confirm_and_rollback_create_no_state_directory(tmp_path: Path) -> None:
    """Nothing to do in a state directory that is not there: one line, and no directory made."""
    absent = tmp_path / "var" / "lib" / "fwmatrix"
    confirmed = CliRunner().invoke(cli_group(), ["confirm", "--state-dir", str(absent)])
    assert confirmed.exit_code == 1 and confirmed.output.startswith(f"error: nothing to confirm: no rollback is armed in {absent} (no apply has used it")
    rolled = CliRunner().invoke(cli_group(), ["rollback", "--state-dir", str(absent), "--netns", "fwm-absent"])
    assert (rolled.exit_code, rolled.output) == (2, f"error: no backup to roll back to: {absent} does not exist (no apply has used it)\n")
    assert not (tmp_path / "var").exists()
    absent.mkdir(parents=True)  # there, but nothing armed in it
    empty = CliRunner().invoke(cli_group(), ["confirm", "--state-dir", str(absent)])
    assert (empty.exit_code, empty.output) == (1, f"error: nothing to confirm: no rollback is armed in {absent}\n")


def test_cli_needs_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    # --netns: should the root check ever go, the command still cannot reach the host's ruleset
    result = CliRunner().invoke(cli_group(), ["apply", str(SEED), "-f", "edge", "--state-dir", str(tmp_path), "--netns", "fwm-absent"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: fwmatrix apply needs root: it reads and loads the kernel's ruleset"
    confirmed = CliRunner().invoke(cli_group(), ["confirm", "--state-dir", str(tmp_path)])
    assert (confirmed.exit_code, confirmed.output.strip()) == (2, "error: fwmatrix confirm needs root: it cancels the rollback that root's apply armed")


@pytest.mark.parametrize("command", [["confirm"], ["rollback", "--netns", "fwm-absent"]])
def test_an_unusable_state_directory_is_one_line(tmp_path: Path, command: list[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = CliRunner().invoke(cli_group(), [*command, "--state-dir", str(blocker / "state")])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: cannot use the state directory {blocker / 'state'}: Not a directory"


# -- kill -9 at every step of an apply (issue 11) ---------------------------------------------------
#
# The command runs in a process of its own and kills itself (FWMATRIX_TEST_KILL_AT=STEP: SIGKILL
# at that checkpoint) or stops itself (FWMATRIX_TEST_STOP_AT) for the test to look and kill it.
# Each case ends with the old ruleset running, or the new one with an armed rollback, and the next
# command says what became of the interrupted apply.

KILL_WAIT = 30.0  # seconds the watchdog may take to undo a killed apply on a busy machine


def run_cli(args: list[str], state: StateDir, netns: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    where = ["--netns", netns] if netns else []
    return subprocess.run(CLI + [*args, *where, "--state-dir", str(state.root)], capture_output=True, text=True,
                          cwd=ROOT / "tests", env={**os.environ, **env}, start_new_session=True, timeout=120, check=False)


def apply_args(backend: str, confirm_seconds: float | None = None) -> list[str]:
    return ["apply", str(SEED), "-f", "edge", "-b", backend, *(["--confirm", str(confirm_seconds)] if confirm_seconds else [])]


def rollbacks(state: StateDir) -> list[dict]:
    if not state.journal_path.exists():
        return []
    return [e for e in map(json.loads, state.journal_path.read_text().splitlines()) if e["event"].startswith("rollback")]


# step, --confirm: what runs afterwards, once the watchdog (if any) is done
KILLS = [
    ("validated", None, "old"), ("planned", None, "old"), ("backed-up", None, "old"), ("recorded", None, "old, record left"),
    ("guarded", None, "old"), ("loaded", None, "old"), ("verified", None, "old"), ("journaled", None, "new"),
    ("loaded", 30, "old"), ("armed", 30, "new, armed"),
]


@pytest.mark.kernel
@pytest.mark.parametrize(("backend", "step", "confirm_seconds", "outcome"),
                         [("nftables", *kill) for kill in KILLS] + [("iptables", "loaded", None, "old"), ("iptables", "armed", 30, "new, armed"),
                                                                           ("iptables", "load:ip6tables-save", 30, "old")])
def test_a_kill_9_at_any_step_of_apply_leaves_a_known_state(backend, step, confirm_seconds, outcome, firewall, state, v1) -> None:
    before = prepare(firewall, backend, v1)
    proc = run_cli(apply_args(backend, confirm_seconds), state, firewall.name, FWMATRIX_TEST_KILL_AT=step)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    if outcome == "old":  # nothing was loaded, or the watchdog has put the backup back
        assert wait_for(lambda: state.pending() is None, KILL_WAIT)
        assert whole_ruleset(firewall, backend) == before
        undone = rollbacks(state)
        if step in ("validated", "planned", "backed-up"):
            assert undone == []
            assert len(state.backup_names()) == (step == "backed-up")
        else:  # the watchdog says what it did, in the journal and its log
            (event,) = undone
            assert event["by"] == "timer" and event["reason"].endswith("was interrupted before it finished")
            assert event["restored"].startswith("the previous ruleset was restored" if step in ("loaded", "verified", "load:ip6tables-save")
                                                else "the live ruleset was not changed")
            assert "was interrupted before it finished" in state.log_path.read_text()
        nothing = run_cli(["confirm"], state)
        assert nothing.returncode == 1
        assert ("was interrupted before it finished" if undone else "no rollback is armed") in nothing.stderr
        if step == "loaded":  # the next apply says what the timer did, and applies
            again = run_cli(apply_args(backend), state, firewall.name)
            assert again.returncode == 0, again.stderr
            assert re.search(r"note: the apply \(pid \d+\) was interrupted before it finished: its rollback timer put back "
                             r"backup \S+ at \S+\n", again.stdout), again.stdout
            assert "msa-to-rtpproxy" in whole_ruleset(firewall, backend)
    elif outcome == "old, record left":  # killed before its timer started: the next command finishes it off
        pending = state.pending()
        assert pending is not None and pending["phase"] == "loading" and "pid" not in pending
        assert whole_ruleset(firewall, backend) == before
        nothing = run_cli(["confirm"], state)
        assert nothing.returncode == 1
        assert re.fullmatch(r"error: nothing to confirm: an apply started at \S+ \(pid \d+\) was interrupted before it finished: "
                            r"the live ruleset was not changed \(backup \S+\)\n", nothing.stderr), nothing.stderr
        assert state.pending() is None and [e["by"] for e in rollbacks(state)] == ["confirm"]
    elif outcome == "new":  # it had finished but for removing its record: the watchdog only tidies up
        assert wait_for(lambda: state.pending() is None, KILL_WAIT)
        now = whole_ruleset(firewall, backend)
        assert now != before and "msa-to-rtpproxy" in now and rollbacks(state) == []
        assert state.last_event("apply") is not None
    else:  # new, armed: confirm keeps it
        pending = state.pending()
        assert pending is not None and pending["phase"] == "armed" and timer_alive(pending)
        assert "msa-to-rtpproxy" in whole_ruleset(firewall, backend)
        confirmed = run_cli(["confirm"], state)
        assert confirmed.returncode == 0 and "confirmed" in confirmed.stdout, confirmed.stderr
        assert wait_for(lambda: not timer_alive(pending)) and "msa-to-rtpproxy" in whole_ruleset(firewall, backend)


def stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


@pytest.mark.kernel
@pytest.mark.parametrize(("backend", "next_command"), [("nftables", "apply"), ("iptables", "rollback"), ("nftables", "confirm")])
def test_an_apply_killed_with_its_watchdog_is_undone_by_the_next_command(backend, next_command, firewall, state, v1) -> None:
    """The worst case: the apply and its timer both die (a crash) right after the load. The
    record on disk lets the next apply, confirm or rollback put the backup back first."""
    before = prepare(firewall, backend, v1)
    proc = subprocess.Popen(CLI + [*apply_args(backend, 30), "--netns", firewall.name, "--state-dir", str(state.root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT / "tests",
                            env={**os.environ, "FWMATRIX_TEST_STOP_AT": "loaded"}, start_new_session=True)
    try:
        assert wait_for(lambda: stopped(proc.pid), 60), "the apply never reached the load"
        loaded = whole_ruleset(firewall, backend)
        assert loaded != before and "msa-to-rtpproxy" in loaded  # the window: new ruleset, not yet verified
        pending = state.pending()
        assert pending is not None and pending["phase"] == "loading" and pending["apply_pid"] == proc.pid and timer_alive(pending)
        os.kill(pending["pid"], signal.SIGKILL)
        assert wait_for(lambda: not timer_alive(pending))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    time.sleep(0.3)
    assert whole_ruleset(firewall, backend) == loaded and state.pending() is not None  # no one has undone it yet
    said = run_cli(["apply", str(SEED), "-f", "edge", "-b", backend] if next_command == "apply" else [next_command], state,
                   None if next_command == "confirm" else firewall.name)
    interrupted = "was interrupted before it finished: the previous ruleset was restored"
    if next_command == "confirm":
        assert said.returncode == 1 and interrupted in said.stderr and said.stderr.count("\n") == 1, said.stderr
        assert whole_ruleset(firewall, backend) == before
    else:
        assert said.returncode == 0, said.stderr
        assert "note: an apply started at" in said.stdout and interrupted in said.stdout.replace("\n", " ")
    if next_command == "apply":  # it planned from the restored ruleset, and applied
        assert "msa-to-rtpproxy" in said.stdout and whole_ruleset(firewall, backend) == loaded
    if next_command == "rollback":
        assert whole_ruleset(firewall, backend) == before
    assert state.pending() is None and rollbacks(state)[0]["by"] == next_command


@pytest.mark.kernel
def test_a_kill_9_during_confirm_keeps_the_ruleset_and_ends_the_timer(firewall, state) -> None:
    applied = run_cli(apply_args("nftables", 3), state, firewall.name)
    assert applied.returncode == 0, applied.stderr
    pending = state.pending()
    assert pending is not None and timer_alive(pending)
    now = whole_ruleset(firewall, "nftables")
    killed = run_cli(["confirm"], state, FWMATRIX_TEST_KILL_AT="confirm-cleared")
    assert killed.returncode == -signal.SIGKILL
    assert state.pending() is None and wait_for(lambda: not timer_alive(pending))
    time.sleep(max(0.0, float(pending["deadline"]) - time.time()) + 0.5)  # past its deadline: nothing rolled back
    assert whole_ruleset(firewall, "nftables") == now and rollbacks(state) == []


# -- a full state directory (issue 11) ----------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs of the test's own, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(mount: Path) -> None:
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while os.write(fd, b"\0" * 4096):
                pass
    finally:
        os.close(fd)


@pytest.mark.kernel
def test_a_full_state_directory_is_one_line_and_changes_nothing(firewall, small_fs, v1) -> None:
    before = prepare(firewall, "nftables", v1)
    state = StateDir(small_fs / "state")
    state.ensure()
    fill(small_fs)
    result = CliRunner().invoke(cli_group(), ["apply", str(SEED), "-f", "edge", "--netns", firewall.name, "--state-dir", str(state.root)])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (f"error: cannot write the backup in the state directory {state.root}: "
                                              "No space left on device")
    assert whole_ruleset(firewall, "nftables") == before
    assert sorted(p.name for p in state.root.rglob("*")) == ["backups", "lock"]  # no half backup, no record, no journal


@pytest.mark.kernel
def test_a_journal_that_cannot_be_written_after_the_load_undoes_the_apply(firewall, state, v1, monkeypatch) -> None:
    before = prepare(firewall, "nftables", v1)
    journal = StateDir.journal

    def full_disk(self, event, **fields):
        if event == "apply":
            raise applying.StateDirError(f"cannot write the journal in the state directory {self.root}: No space left on device")
        journal(self, event, **fields)

    monkeypatch.setattr(StateDir, "journal", full_disk)
    with pytest.raises(ApplyError, match=r"apply failed: cannot write the journal .*No space left on device; the previous ruleset was restored"):
        apply(ApplyRequest(str(SEED), "edge", "nftables"), firewall, state)
    assert whole_ruleset(firewall, "nftables") == before and state.pending() is None


def test_a_journal_line_is_whole_or_absent_on_a_full_disk(small_fs) -> None:
    state = StateDir(small_fs / "state")
    state.journal("apply", pad="x" * (4000 - 80))
    size = state.journal_path.stat().st_size
    assert 3900 < size < 4096  # the next line cannot fit in the page the file has
    fill(small_fs)
    with pytest.raises(applying.StateDirError, match="cannot write the journal .*No space left on device"):
        state.journal("rollback", pad="y" * 400)
    assert state.journal_path.stat().st_size == size and state.last_event("apply", "rollback")["event"] == "apply"


def test_an_interrupted_apply_whose_backup_is_gone_says_what_to_do(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    state.write_pending({"token": "t", "phase": "loading", "backup": "20260101T000000.000000Z-nftables", "target": "host",
                         "started": "2026-01-01T00:00:00.000Z", "apply_pid": 4242, "timer": "detached"})
    with pytest.raises(FwmatrixError, match=r"^an apply started at 2026-01-01T00:00:00.000Z \(pid 4242\) was interrupted before it "
                       r"finished, and its backup 20260101T000000.000000Z-nftables could not be restored: no backup named .*; "
                       r"check the firewall, then `fwmatrix rollback --backup NAME` or remove .*pending.json$"):
        confirm(state)
    assert state.pending() is not None and state.last_event("rollback-failed")["by"] == "confirm"
    with pytest.raises(FwmatrixError, match="no backup to roll back to"):  # rollback goes on to the backup asked for
        rollback(state, NamespaceExecutor("fwm-none"))

"""The Ansible collection (ansible/fwmatrix/fwmatrix) against a fleet of real hosts over SSH.

The three firewalls of examples/fleet (perimeter and internal on nftables, branch on
iptables) are network namespaces, each with a veth to the root namespace
on an address of its own (10.231.X.4n+2/30) and an `sshd` listening there. The
collection's playbooks run with a real `ansible-playbook` over SSH as root;
the rulesets are compiled on the controller (the test, through a wrapper that
logs each call) and shipped; fwmatrix on the "hosts" is this checkout's venv, and since sshd runs inside
the namespace, `fwmatrix apply` there loads the namespace's own kernel
ruleset: a remote firewall, as far as anything can tell. The host's own
ruleset is compared before and after. Everything is deleted afterwards: the
namespaces' processes (sshd, its sessions, rollback timers) by pid, then the
namespaces, which take their veths with them.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, require_kernel
from fwmatrix.netns import NetNamespace, unique_name

COLLECTION = ROOT / "ansible" / "fwmatrix" / "fwmatrix"
MATRIX = ROOT / "examples" / "fleet" / "matrix.yaml"
BIN = Path(sys.executable).parent
SUBNET = f"10.231.{os.getpid() % 250}"  # a /30 per host inside it; 10.231/16 is used by no other test
FLEET = {"perimeter": "nftables", "internal": "nftables", "branch": "iptables"}  # host (and firewall) -> its backend
COUNTERS_RE = re.compile(r" counter packets \d+ bytes \d+|\[\d+:\d+\]")
PLANTED = 'iifname "wan0" oifname "dmz0" tcp dport 3389 accept comment "planted"'
SSHD_CONFIG = """\
ListenAddress {address}
HostKey {tmp}/host_key
PidFile {tmp}/sshd-{name}.pid
AuthorizedKeysFile {tmp}/id_ed25519.pub
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""


@dataclass
class Host:
    name: str
    backend: str
    namespace: NetNamespace
    address: str
    state_dir: Path
    sshd: subprocess.Popen | None = None

    @property
    def firewall(self) -> str:
        return self.name

    def nft(self, *args: str) -> str:
        return self.namespace.run(["nft", *args]).stdout

    def ruleset(self) -> str:
        """Everything it runs (iptables-nft's tables too), without the counters the SSH traffic moves."""
        return COUNTERS_RE.sub("", self.nft("list", "ruleset") + self.namespace.run(["ipset", "save"]).stdout)

    def fwmatrix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.namespace.run([str(BIN / "fwmatrix"), *args], check=False)


def host_ruleset() -> str:
    proc = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else f"unreadable: {proc.stderr}"


def start_host(tmp: Path, index: int, name: str, backend: str) -> Host:
    ns = NetNamespace(unique_name("fwmfleet"))
    ns.create()
    try:
        return configure_host(tmp, Host(name, backend, ns, f"{SUBNET}.{4 * index + 2}", tmp / f"state-{name}"), index)
    except BaseException:
        ns.delete()  # no sshd runs yet: Popen comes last
        raise


def configure_host(tmp: Path, host: Host, index: int) -> Host:
    """A veth to the root namespace, an address at each end, and sshd on the namespace's address."""
    ns, name = host.namespace, host.name
    outside, inside = f"fwf{os.getpid() % 10**6}h{index}", f"fwf{os.getpid() % 10**6}n{index}"
    subprocess.run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns.name], check=True)
    subprocess.run(["ip", "addr", "add", f"{SUBNET}.{4 * index + 1}/30", "dev", outside], check=True)
    subprocess.run(["ip", "link", "set", outside, "up"], check=True)
    ns.run(["ip", "addr", "add", f"{host.address}/30", "dev", inside])
    ns.run(["ip", "link", "set", inside, "up"])
    config = tmp / f"sshd-{name}.conf"
    config.write_text(SSHD_CONFIG.format(address=host.address, tmp=tmp, name=name))
    with open(tmp / f"sshd-{name}.log", "w") as log:
        host.sshd = subprocess.Popen(["ip", "netns", "exec", ns.name, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=log)
    return host


def stop_host(host: Host) -> None:
    """Every process in the namespace was started by this test (sshd, its sessions, rollback timers)."""
    pids = subprocess.run(["ip", "netns", "pids", host.namespace.name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    if host.sshd is not None:
        host.sshd.wait(timeout=10)
    host.namespace.delete()  # takes the veth pair with it


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def ssh_ready(host: Host, key: Path) -> bool:
    proc = subprocess.run(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
                           f"root@{host.address}", "true"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[list[Host]]:
    require_kernel()
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("needs Debian's openssh-server (the Makefile's APT_PACKAGES installs it)")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    for key in ("id_ed25519", "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / key)], check=True)
    before = host_ruleset()
    hosts: list[Host] = []
    try:
        for index, (name, backend) in enumerate(FLEET.items()):
            hosts.append(start_host(tmp_path, index, name, backend))
        for host in hosts:
            assert wait_for(lambda: ssh_ready(host, tmp_path / "id_ed25519"), 30), \
                (tmp_path / f"sshd-{host.name}.log").read_text()
        yield hosts
    finally:
        for host in hosts:
            stop_host(host)
        assert host_ruleset() == before, "the host's own ruleset changed"


def inventory(tmp: Path, hosts: list[Host], **per_host: dict) -> Path:
    lines = ["[firewalls]"]
    for host in hosts:
        extra = " ".join(f"{key}={value}" for key, value in per_host.get(host.name, {}).items())
        lines.append(f"{host.name} ansible_host={host.address} fwmatrix_backend={host.backend} "
                     f"fwmatrix_state_dir={host.state_dir} fwmatrix_remote_matrix={tmp}/on-{host.name}/matrix.yaml {extra}")
    lines += ["", "[firewalls:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={tmp}/id_ed25519",
              "ansible_python_interpreter=/usr/bin/python3", f"ansible_remote_tmp={tmp}/remote-tmp",
              f"fwmatrix_bin={BIN / 'fwmatrix'}", f"fwmatrix_controller_bin={controller_fwmatrix(tmp)}",
              f"fwmatrix_matrix={MATRIX}", "fwmatrix_timer=detached",
              "fwmatrix_confirm=60", "fleet_check_timeout=3"]
    path = tmp / f"inventory-{len(list(tmp.glob('inventory-*')))}.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def controller_fwmatrix(tmp: Path) -> Path:
    """The controller's fwmatrix: the venv's, through a wrapper that logs each call (the compiles)."""
    wrapper = tmp / "controller-fwmatrix"
    if not wrapper.exists():
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {tmp}/controller.log\nexec {BIN / "fwmatrix"} "$@"\n')
        wrapper.chmod(0o755)
    return wrapper


def compiles(tmp: Path) -> list[tuple[str, str]]:
    """(firewall, backend) of each compile on the controller since the last look."""
    log = tmp / "controller.log"
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return sorted((argv[argv.index("--firewall") + 1], argv[argv.index("--backend") + 1]) for argv in calls if argv[0] == "compile")


def playbook(tmp: Path, name: str, inventory_path: Path, report: str | None, *options: str) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Reports go to tmp/REPORT, or without REPORT where the playbooks put them by default (fleet-report in the
    current directory, run from tmp/cwd as a shell would: PWD set)."""
    cwd = tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    where = ["-e", f"fleet_report_dir={tmp / report}"] if report is not None else []
    env = dict(os.environ, PWD=str(cwd), ANSIBLE_COLLECTIONS_PATH=str(collections_path(tmp)), ANSIBLE_HOME=str(tmp / "ansible-home"),
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp / "cp"), ANSIBLE_FORKS="3",
               ANSIBLE_NOCOLOR="1", LC_ALL="C.UTF-8", ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_LOCAL_TEMP=str(tmp / "local-tmp"))
    started, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory_path), str(COLLECTION / "playbooks" / name),
                           *where, *options], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the controller's side: ansible-playbook, ssh, fwmatrix compile
    return proc, time.monotonic() - started, after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.kernel
def test_the_fleet_playbook_checks_applies_rolls_back_and_audits(fleet: list[Host], tmp_path: Path) -> None:
    perimeter, internal, branch = fleet
    # before: perimeter runs the matrix's ruleset plus a rule planted by hand, internal runs
    # nothing of fwmatrix's, branch runs exactly the matrix's (iptables)
    for host in (perimeter, branch):
        done = host.fwmatrix("apply", str(MATRIX), "-f", host.firewall, "-b", host.backend, "--state-dir", str(tmp_path / f"seed-{host.name}"))
        assert done.returncode == 0, done.stdout + done.stderr
    perimeter.nft("add", "rule", "inet", "fwmatrix", "forward", *PLANTED.split())
    rulesets = {host.name: host.ruleset() for host in fleet}
    assert "FWM-FORWARD" in rulesets["branch"] and "planted" in rulesets["perimeter"]
    timings: dict[str, tuple[float, float]] = {}
    every_firewall = sorted((host.firewall, host.backend) for host in fleet)

    # check mode: the audit and what an apply would change, touching nothing
    proc, *timings["check"] = playbook(tmp_path, "fleet.yml", inventory(tmp_path, fleet), "check", "--check", "--diff")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {host.name: host.ruleset() for host in fleet} == rulesets
    assert compiles(tmp_path) == every_firewall  # on the controller, one per firewall
    before = read_json(tmp_path / "check" / "before.json")
    drift = [f for f in before["findings"] if f["host"] == "perimeter"]
    assert [(f["firewall"], f["kind"]) for f in drift] == [("perimeter", "excess")]
    assert any("tcp/3389" in region for region in drift[0]["regions"])
    assert not [f for f in before["findings"] if f["host"] == "branch"]
    assert "excess" in {f["kind"] for f in before["findings"] if f["host"] == "internal"}  # no ruleset: everything forwarded
    plans = {host.name: read_json(tmp_path / "check" / "plan" / f"{host.name}.json") for host in fleet}
    assert {name: plan["changed"] for name, plan in plans.items()} == {"perimeter": True, "internal": True, "branch": False}
    assert {name: plan["compiled"] for name, plan in plans.items()} == {
        "perimeter": ["perimeter.nft"], "internal": ["internal.nft"], "branch": ["branch.ipt4", "branch.ipt6"]}
    removed = [line for line in plans["perimeter"]["ruleset_diff"].splitlines() if line.startswith("-") and not line.startswith("---")]
    assert len(removed) == 1 and "planted" in removed[0], plans["perimeter"]["ruleset_diff"]
    assert "--- perimeter.nftables (live)" in proc.stdout  # --diff shows the ruleset diff

    # apply; internal fails the controller's connectivity check, so it is never confirmed
    failing = inventory(tmp_path, fleet, internal={"fleet_check_port": 9, "fwmatrix_confirm": 5})
    proc, *timings["apply, internal's check failing"] = playbook(tmp_path, "fleet.yml", failing, "apply1")
    assert proc.returncode != 0
    recap = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+:.*\bfailed=(\d+)", proc.stdout, re.M)}
    assert recap == {"perimeter": 0, "internal": 1, "branch": 0}, proc.stdout
    assert compiles(tmp_path) == every_firewall
    assert "planted" not in perimeter.ruleset()
    assert branch.ruleset() == rulesets["branch"]  # re-applied as it was
    assert not (perimeter.state_dir / "pending.json").exists() and not (branch.state_dir / "pending.json").exists()
    plan = read_json(tmp_path / "apply1" / "plan" / "branch.json")
    assert plan["rollback"]["seconds"] == 60 and plan["rollback"]["timer"] == "detached"
    journal = internal.state_dir / "journal.jsonl"
    events = lambda: [json.loads(line) for line in journal.read_text().splitlines()]  # noqa: E731
    assert wait_for(lambda: events()[-1]["event"] == "rollback", 60), "internal's rollback did not fire"
    applied, rolled_back = events()[-2:]  # applied with its 5 s to confirm, then rolled back by the timer
    assert (applied["event"], applied["confirm"], rolled_back["token"]) == ("apply", 5.0, applied["token"]), events()
    assert internal.ruleset() == rulesets["internal"]

    # apply again, every check passes
    proc, *timings["apply"] = playbook(tmp_path, "fleet.yml", inventory(tmp_path, fleet), "apply2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(not (host.state_dir / "pending.json").exists() for host in fleet)
    assert read_json(tmp_path / "apply2" / "after.json")["clean"] is True

    # the fleet's audit, its reports where they go by default
    proc, *timings["audit"] = playbook(tmp_path, "audit.yml", inventory(tmp_path, fleet), None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = tmp_path / "cwd" / "fleet-report"
    report = read_json(reports / "audit.json")
    assert report["clean"] is True and report["findings"] == []
    assert [(f["host"], f["firewall"]) for f in report["firewalls"]] == sorted((h.name, h.firewall) for h in fleet)
    assert "| branch | branch |" in (reports / "audit.md").read_text()
    junit = ET.parse(reports / "audit.junit.xml").getroot()  # written by `fwmatrix fleet-report` on the controller
    assert sorted(s.get("name") for s in junit.iter("testsuite")) == sorted(f"{h.name}.{h.firewall}" for h in fleet)
    assert (junit.get("tests"), junit.get("failures")) == ("3", "0")
    sarif = read_json(reports / "audit.sarif")
    assert sarif["version"] == "2.1.0" and [r for run in sarif["runs"] for r in run["results"]] == []
    print("fleet timings (wall, controller CPU): " + ", ".join(f"{name} {wall:.1f} s, {cpu:.1f} s" for name, (wall, cpu) in timings.items()))
    print("check mode, perimeter's planted drift: " + json.dumps(drift) + "\n" + plans["perimeter"]["ruleset_diff"])


def collections_path(tmp: Path) -> Path:
    """A directory Ansible finds the collection in (ansible_collections/NAMESPACE/NAME)."""
    collections = tmp / "collections" / "ansible_collections"
    if not collections.exists():
        collections.mkdir(parents=True)
        (collections / "fwmatrix").symlink_to(COLLECTION.parent)
    return tmp / "collections"


def test_ansible_doc_shows_every_module(tmp_path: Path) -> None:
    modules = sorted(path.stem for path in (COLLECTION / "plugins" / "modules").glob("*.py"))
    assert modules == ["fwmatrix_fleet_report", "fwmatrix_ruleset"]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path(tmp_path)), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               ANSIBLE_NOCOLOR="1")
    for module in modules:
        proc = subprocess.run([str(BIN / "ansible-doc"), f"fwmatrix.fwmatrix.{module}"], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0 and "ERROR" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr
        assert f"MODULE fwmatrix.fwmatrix.{module}" in proc.stdout.replace("\x1b[1m", "").replace("\x1b[0m", "")
        assert "EXAMPLES" in proc.stdout and "RETURN VALUES" in proc.stdout
    listed = subprocess.run([str(BIN / "ansible-doc"), "--list", "fwmatrix.fwmatrix", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert sorted(json.loads(listed.stdout)) == [f"fwmatrix.fwmatrix.{m}" for m in modules], listed.stderr


def test_ansible_lint_passes_the_collection(tmp_path: Path) -> None:
    """ansible-lint (PyPI) offline, at the `production` profile (the collection's .ansible-lint):
    playbooks, role, galaxy.yml, module names resolved through the collection. `ansible-test sanity`
    is not run: it bootstraps each test's virtual environment with a script downloaded from
    ci-files.testing.ansible.com, which CI cannot reach (docs/fleet.md)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections_path(tmp_path)), ANSIBLE_HOME=str(tmp_path / "ansible-home"),
               PATH=f"{BIN}:{os.environ.get('PATH', '')}", NO_COLOR="1", XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor"], cwd=COLLECTION, capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Passed: 0 failure(s), 0 warning(s)" in proc.stdout + proc.stderr and "production" in proc.stdout + proc.stderr

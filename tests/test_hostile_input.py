"""Input a user (or an attacker) feeds fwmatrix: never a crash, a hang or an internal
error, but one line `error: FILE:LINE: ...` and exit 2 (issue 11)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SEED, SMALL


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def refused(proc: subprocess.CompletedProcess[str], path: str | Path, line: int | None = None) -> str:
    """The one-line refusal of an input: exit 2, `error: FILE[:LINE]: ...`; its message."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    where = f"{path}:{line}: " if line is not None else f"{path}"
    assert proc.stderr.startswith(f"error: {where}"), proc.stderr[-2000:]
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    return proc.stderr


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# -- matrices nested too deeply ------------------------------------------------------------


@pytest.mark.parametrize("deep", [
    "name: " + "[" * 50_000 + "]" * 50_000,
    "name: " + "{a: " * 50_000 + "1" + "}" * 50_000,
    "name: " + "- " * 50_000 + "x",
    "name:\n" + "".join(" " * i + f"k{i}:\n" for i in range(2_000)) + " " * 2_000 + "x",
], ids=["lists", "mappings", "block-lists", "block-mappings"])
def test_a_matrix_nested_too_deeply_is_one_line(tmp_path, deep: str) -> None:
    path = write(tmp_path, "deep.yaml", "fwmatrix: 1\n" + deep + "\n")
    message = refused(run("compile", str(path)), path)
    assert "nest" in message
    assert re.match(rf"error: {re.escape(str(path))}:[0-9]+: ", message)


def test_nesting_within_the_limit_is_read_as_before(tmp_path) -> None:
    path = write(tmp_path, "nested.yaml", SMALL.replace("name: small", "name: " + "[" * 20 + "]" * 20))
    message = refused(run("compile", str(path)), path, 2)
    assert "the matrix name must be a string, not a list" in message


# -- ruleset files the audit reads -------------------------------------------------------


@pytest.fixture(scope="module")
def seed_json() -> dict:
    """The seed's compiled ruleset as `nft -j list ruleset` would print it (by the parser's IR)."""
    return {"nftables": [
        {"metainfo": {"json_schema_version": 1}},
        {"table": {"family": "inet", "name": "f", "handle": 1}},
        {"chain": {"family": "inet", "table": "f", "name": "forward", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
        {"rule": {"family": "inet", "table": "f", "chain": "forward", "handle": 2, "expr": [{"accept": None}]}},
    ]}


def test_json_nested_deeper_than_python_reads_is_an_input_error(tmp_path) -> None:
    path = write(tmp_path, "deep.json", '{"nftables": ' + "[" * 20_000 + "]" * 20_000 + "}")
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "nest" in message


def test_a_5000_digit_handle_is_an_input_error(tmp_path, seed_json) -> None:
    text = json.dumps(seed_json).replace('"handle": 2', '"handle": ' + "9" * 5_000)
    path = write(tmp_path, "handle.json", text)
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "digits" in message


IPTABLES_LOOP = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:A - [0:0]
:B - [0:0]
-A FORWARD -j A
-A A -j B
-A B -j A
COMMIT
"""


def test_an_iptables_jump_loop_is_an_input_error_naming_the_chains(tmp_path) -> None:
    path = write(tmp_path, "loop.ipt4", IPTABLES_LOOP)
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "loop" in message and re.search(r"\bA\b.*\bB\b.*\bA\b", message), message


def test_jumps_nested_deeper_than_followed_are_an_input_error(tmp_path) -> None:
    chains = [f"C{i}" for i in range(80)]
    text = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    text += "".join(f":{c} - [0:0]\n" for c in chains)
    text += "-A FORWARD -j C0\n" + "".join(f"-A {a} -j {b}\n" for a, b in zip(chains, chains[1:])) + "COMMIT\n"
    path = write(tmp_path, "chain.ipt4", text)
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "deep" in message


def test_a_jump_to_a_chain_not_listed_is_an_input_error(tmp_path, seed_json) -> None:
    text = json.dumps(seed_json).replace('"expr": [{"accept": null}]', '"expr": [{"jump": {"target": "nowhere"}}]')
    path = write(tmp_path, "jump.json", text)
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "'nowhere'" in message


def test_an_nft_syntax_error_exits_2_and_names_the_file_and_line(tmp_path) -> None:
    path = write(tmp_path, "bad.nft", "table inet f {\n  chain c {\n    tcp dport 22 acept\n  }\n}\n")
    proc = run("audit", str(SEED), "-r", str(path), "-b", "nftables")
    if "cannot run" in proc.stderr or "namespace" in proc.stderr:
        pytest.skip(f"nft cannot run here: {proc.stderr}")
    refused(proc, path, 3)


def test_an_iptables_parse_error_exits_2_and_names_the_file(tmp_path) -> None:
    path = write(tmp_path, "bad.ipt4", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD --bogus-option x -j ACCEPT\nCOMMIT\n")
    refused(run("audit", str(SEED), "-r", str(path)), path)


def test_a_value_iptables_restore_refuses_is_an_input_error_naming_its_line(tmp_path) -> None:
    # a published file hides its MACs: it never loads, so it is not audited as if it did
    path = write(tmp_path, "hidden.ipt4", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 10.0.0.5 -m mac --mac-source XX:XX:XX:XX:XX:XX -j ACCEPT\nCOMMIT\n")
    message = refused(run("audit", str(SEED), "-f", "edge", "-r", str(path)), path, 3)
    assert "--mac-source XX:XX:XX:XX:XX:XX: not a MAC address (iptables-restore refuses it)" in message


def test_user_text_is_never_rich_markup(tmp_path) -> None:
    folder = tmp_path / "[root@host ~]"
    folder.mkdir()
    path = write(folder, "[bold]x.ipt4", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD --bogus-option [red]x -j ACCEPT\nCOMMIT\n")
    message = refused(run("audit", str(SEED), "-r", str(path)), path)
    assert "[root@host ~]/[bold]x.ipt4" in message
    out = tmp_path / "[blink]out"
    proc = run("compile", str(SEED), "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}/edge.nft" in proc.stderr
    noted = write(tmp_path, "m.yaml", SMALL.replace("    service: tcp/443", "    service: tcp/443\n    note: '[root@host ~] [bold]x[/bold]'"))
    proc = run("show", str(noted))
    assert proc.returncode == 0, proc.stderr
    assert "[root@host ~] [bold]x[/bold]" in proc.stdout


# -- what the matrix loader accepts ------------------------------------------------------------


@pytest.mark.parametrize("iface", ["0wan", "1", "pass", "all", "any", "self", "on", "block", "table", "drop"])
def test_interface_names_a_backend_cannot_write_are_refused_at_load(tmp_path, iface: str) -> None:
    path = write(tmp_path, "m.yaml", SMALL.replace("wan0:", f"{iface}:"))
    message = refused(run("compile", str(path), "-b", "nftables"), path, 9)
    assert iface in message


def test_sctp_without_ports_is_refused_at_load(tmp_path) -> None:
    path = write(tmp_path, "m.yaml", SMALL.replace("service: tcp/443", "service: sctp"))
    message = refused(run("compile", str(path), "-b", "nftables"), path, 14)
    assert "sctp" in message
    ok = write(tmp_path, "ok.yaml", SMALL.replace("service: tcp/443", "service: sctp/2905"))
    assert run("compile", str(ok), "-b", "nftables").returncode == 0


@pytest.mark.parametrize("byte", ["\x00", "\x07", "\x1b", "\x7f"], ids=["nul", "bel", "esc", "del"])
def test_a_control_byte_is_one_line_with_its_line(tmp_path, byte: str) -> None:
    path = write(tmp_path, "m.yaml", SMALL.replace("lan0: lan", f"lan0: l{byte}an"))
    message = refused(run("compile", str(path)), path, 10)
    assert byte not in message


def test_a_trailing_newline_in_a_value_is_echoed_escaped(tmp_path) -> None:
    path = write(tmp_path, "m.yaml", SMALL.replace("lan0: lan", 'lan0: "lanx\\n"'))
    message = refused(run("compile", str(path)), path, 10)
    assert "'lanx\\n'" in message


# -- compile --out-dir: a firewall's files replaced as a whole --------------------------------------------


def _many_hosts(count: int) -> str:
    """The small matrix with a group big enough that iptables writes an ipset file."""
    hosts = "".join(f"  h{i}: 10.0.0.{i + 1}\n" for i in range(count))
    text = SMALL.replace("firewalls:", f"hosts:\n{hosts}groups:\n  many: [{', '.join(f'h{i}' for i in range(count))}]\nfirewalls:")
    return text.replace("from: lan", "from: many")


def test_a_compile_removes_the_files_it_no_longer_writes(tmp_path) -> None:
    out = tmp_path / "out"
    big = write(tmp_path, "big.yaml", _many_hosts(200))
    assert run("compile", str(big), "-b", "iptables", "--out-dir", str(out)).returncode == 0
    assert (out / "edge.ipset").exists()
    (out / "notes.txt").write_text("not fwmatrix's")
    small = write(tmp_path, "small.yaml", SMALL)
    proc = run("compile", str(small), "-b", "iptables", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["edge.ipt4", "edge.ipt6", "notes.txt"]
    assert run("compile", str(small), "-b", "nftables", "--out-dir", str(out)).returncode == 0
    assert sorted(os.listdir(out)) == ["edge.ipt4", "edge.ipt6", "edge.nft", "notes.txt"]  # another backend's files stay


def test_a_compile_waits_for_the_one_writing_the_directory(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    lock = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
        proc = subprocess.Popen([exe, "compile", str(SEED), "--out-dir", str(out)], stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert proc.poll() is None and not (out / "edge.nft").exists()
    finally:
        os.close(lock)
    assert proc.wait(timeout=60) == 0
    assert (out / "edge.nft").exists()

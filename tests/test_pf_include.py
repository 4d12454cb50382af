"""pf.conf's `include "FILE"`, read in place as pfctl reads it (pf.conf(5)).

A relative name is opened from the directory pfctl runs in; fwmatrix reads a ruleset file
as `cd DIR && pfctl -nf FILE` would, DIR being the file's directory, for nested includes
too. Included text shares the macros, its rules keep their own FILE:LINE, and what cannot
be included (missing, a loop, too deep, a directory, a binary file) is one line, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_pf_parse import TCP, Judge, chain

from fwmatrix.backends import pf
from fwmatrix.backends.pf.include import MAX_INCLUDE_DEPTH
from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset, Unmodelled, UnmodelledAction

IFACES = ("em0", "em1")
MATRIX = Path(__file__).resolve().parent / "idiom" / "perimeter.yaml"


def write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def read(path: Path, **kw) -> Ruleset:
    return pf.parse_ruleset(path.read_text(), str(path), interfaces=IFACES, **kw)


def origins(ruleset: Ruleset) -> set[str]:
    return {rule.origin for name in ("in", "out") for rule in chain(ruleset, name).rules}


def refusal(path: Path) -> str:
    with pytest.raises(BackendError) as caught:
        read(path)
    return str(caught.value)


def test_nested_includes_are_read_in_place_from_the_top_file_s_directory(tmp_path: Path) -> None:
    # pfctl opens every relative name from its working directory, in nested includes too:
    # rules/ssh.conf's `include "rules/web.conf"` is tmp/rules/web.conf, not tmp/rules/rules/web.conf
    write(tmp_path, {
        "pf.conf": 'block all\ninclude "./rules/ssh.conf"\npass in on em0 proto tcp to 10.0.0.9 port 25\npass out\n',
        "rules/ssh.conf": '# ssh first\npass in on em0 proto tcp to 10.0.0.5 port 22\ninclude "rules/web.conf"\n',
        "rules/web.conf": "\n\npass in on em0 proto tcp to 10.0.0.5 port 443\n",
        "rules/rules/web.conf": "pass in on em0 proto tcp to 10.0.0.5 port 8443\n",  # what a file-relative reading would take
    })
    rs = read(tmp_path / "pf.conf")
    j = Judge(rs, IFACES)
    assert [j.fate("em0", "em1", "192.0.2.1", dst, TCP, port) for dst, port in
            (("10.0.0.5", 22), ("10.0.0.5", 443), ("10.0.0.9", 25), ("10.0.0.5", 8443))] == ["pass", "pass", "pass", "block"]
    assert {f"{tmp_path}/rules/ssh.conf:2", f"{tmp_path}/rules/web.conf:3", f"{tmp_path}/pf.conf:3"} <= origins(rs)
    assert not [r for r in chain(rs, "in").rules if isinstance(r.action, UnmodelledAction)]


def test_an_absolute_include_is_read_as_it_is(tmp_path: Path) -> None:
    elsewhere = tmp_path / "etc" / "pf" / "pass.conf"
    write(tmp_path, {"etc/pf/pass.conf": "pass in on em0 proto tcp to 10.0.0.5 port 22\n",
                     "box/pf.conf": f'block all\ninclude "{elsewhere}"\npass out\n'})
    rs = read(tmp_path / "box" / "pf.conf")
    assert Judge(rs, IFACES).fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "pass"
    assert f"{elsewhere}:1" in origins(rs)


def test_macros_cross_files_in_both_directions(tmp_path: Path) -> None:
    write(tmp_path, {
        "pf.conf": 'ext_if = "em0"\nblock all\ninclude "macros.conf"\npass in on $ext_if proto tcp to $web port $ports\npass out\n',
        "macros.conf": 'web = "10.0.0.5"\nports = "{ 22 443 }"\npass in on $ext_if proto tcp to $web port 80\n',
    })
    j = Judge(read(tmp_path / "pf.conf"), IFACES)
    assert [j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, p) for p in (22, 443, 80, 25)] == ["pass", "pass", "pass", "block"]


def test_a_macro_defined_after_the_include_is_not_visible_inside_it(tmp_path: Path) -> None:
    write(tmp_path, {"pf.conf": 'include "rules.conf"\nweb = "10.0.0.5"\n', "rules.conf": "\npass in to $web\n"})
    assert refusal(tmp_path / "pf.conf") == (f"{tmp_path}/rules.conf:2: macro 'web' is not defined"
                                             f" (included from {tmp_path}/pf.conf:1)")


def test_an_error_deep_in_nested_includes_names_its_file_and_where_the_ruleset_includes_it(tmp_path: Path) -> None:
    write(tmp_path, {"pf.conf": 'block all\ninclude "a.conf"\n', "a.conf": 'include "b.conf"\n', "b.conf": "pass\nfrobnicate\n"})
    assert refusal(tmp_path / "pf.conf") == f"{tmp_path}/b.conf:2: unknown statement 'frobnicate' (included from {tmp_path}/pf.conf:2)"


def test_an_include_loop_is_refused_naming_the_chain(tmp_path: Path) -> None:
    write(tmp_path, {"a.conf": 'x = "1"\ninclude "./b.conf"\n', "b.conf": '\ninclude "a.conf"\n', "self.conf": 'include "self.conf"\n'})
    assert refusal(tmp_path / "a.conf") == (f'{tmp_path}/b.conf:2: include "a.conf": an include loop '
                                            f"({tmp_path}/a.conf:2 -> {tmp_path}/b.conf:2 -> {tmp_path}/a.conf)")
    assert refusal(tmp_path / "self.conf") == (f'{tmp_path}/self.conf:1: include "self.conf": an include loop '
                                               f"({tmp_path}/self.conf:1 -> {tmp_path}/self.conf)")


def test_a_file_included_twice_in_sequence_is_no_loop(tmp_path: Path) -> None:
    write(tmp_path, {"pf.conf": 'block all\ninclude "p.conf"\ninclude "p.conf"\npass out\n', "p.conf": "pass in on em0 proto tcp to port 22\n"})
    assert Judge(read(tmp_path / "pf.conf"), IFACES).fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "pass"


def test_very_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    depth = 400  # deeper than Python's stack would allow, were it followed
    write(tmp_path, {f"n{i}.conf": f'include "n{i + 1}.conf"\n' for i in range(depth)} | {f"n{depth}.conf": "pass\n"})
    message = refusal(tmp_path / "n0.conf")
    assert message.startswith(f'{tmp_path}/n{MAX_INCLUDE_DEPTH}.conf:1: include "n{MAX_INCLUDE_DEPTH + 1}.conf": includes nested more than')
    assert f"({tmp_path}/n0.conf:1 -> ... -> {tmp_path}/n{MAX_INCLUDE_DEPTH}.conf:1)" in message
    # as deep as allowed is read
    write(tmp_path, {f"n{MAX_INCLUDE_DEPTH}.conf": "pass\n"})
    read(tmp_path / "n0.conf")


@pytest.mark.parametrize("target, why", [("d", "is a directory"), ("bin", "not a text file"), ("latin1", "not UTF-8 text"),
                                         ("missing.conf", "no such file")])
def test_what_cannot_be_included_is_refused_in_one_line(tmp_path: Path, target: str, why: str) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "bin").write_bytes(b"pass\x00\x01\x02\n")
    (tmp_path / "latin1").write_bytes(b"# caf\xe9\npass\n")
    write(tmp_path, {"pf.conf": f'block all\ninclude "{target}"\n'})
    message = refusal(tmp_path / "pf.conf")
    assert message.startswith(f'{tmp_path}/pf.conf:2: include "{target}": {why}') and f"{tmp_path}/{target}" in message
    assert "\n" not in message


def test_text_that_is_no_file_keeps_its_include_unmodelled_and_says_why(tmp_path: Path) -> None:
    # a pfctl listing, or text given as a string: no directory to resolve the include from,
    # so it stays judged both ways (it may hold any rule)
    write(tmp_path, {"p.conf": "pass\n"})
    text = f'block all\ninclude "{tmp_path}/p.conf"\n'
    for source in ("pfctl -sr", str(tmp_path / "absent.conf")):
        rs = pf.parse_ruleset(text, source, interfaces=IFACES)
        why = next(r.action.text for r in chain(rs, "in").rules if isinstance(r.action, UnmodelledAction))
        assert why.startswith(f"include {tmp_path}/p.conf (its rules are not read: the ruleset is no file")
        assert Judge(rs, IFACES).fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "maybe"


def test_an_include_in_an_anchor_s_given_text_stays_unmodelled(tmp_path: Path) -> None:
    write(tmp_path, {"pf.conf": 'block all\nanchor "local"\n', "p.conf": "pass\n"})
    rs = read(tmp_path / "pf.conf", anchors={"local": f'include "{tmp_path}/p.conf"\n'})
    assert any(isinstance(r.action, UnmodelledAction) and "--pf-anchor" in r.action.text for r in chain(rs, "in").rules)


# -- through the CLI: the idiom of pf.conf(5) split over files, and its drifted twin --

SPLIT = {
    "gw/pf.conf": 'ext_if = "em0"\ndmz_if = "em1"\npublic_ip = "203.0.113.7"\ninclude "./rules/hosts.conf"\nblock all\n'
                  'include "./rules/forwards.conf"\n',
    "gw/rules/hosts.conf": 'web = "192.168.10.10"\nmail = "192.168.10.25"\nvoip = "192.168.10.50"\n',
    "gw/rules/forwards.conf": "pass in on $ext_if proto tcp to $public_ip port 443 rdr-to $web\n"
                              "pass in on $ext_if proto tcp to $public_ip port 25 rdr-to $mail\n"
                              "pass in on $ext_if proto udp to $public_ip port 10000:20000 rdr-to $voip\n"
                              "pass out on $dmz_if proto tcp to $web port 443\n"
                              "pass out on $dmz_if proto tcp to $mail port 25\n"
                              "pass out on $dmz_if proto udp to $voip port 10000:20000\n",
}


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # run from elsewhere than the ruleset's directory: './' is still read beside it
    return subprocess.run([sys.executable, "-m", "fwmatrix", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "250"})


def test_the_split_idiom_audits_clean_through_the_cli(tmp_path: Path) -> None:
    write(tmp_path, SPLIT)
    done = cli(tmp_path, "audit", str(MATRIX), "-f", "gw", "-r", "gw/pf.conf")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches the matrix" in done.stdout


def test_an_included_file_that_opens_one_port_too_many_is_found_as_excess_at_its_line(tmp_path: Path) -> None:
    write(tmp_path, SPLIT)
    with open(tmp_path / "gw/rules/forwards.conf", "a") as handle:
        handle.write("pass in on $ext_if proto tcp to $public_ip port 8080 rdr-to $web\npass out on $dmz_if proto tcp to $web port 8080\n")
    done = cli(tmp_path, "audit", str(MATRIX), "-f", "gw", "-r", "gw/pf.conf", "--format", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    found = {(f["kind"], f["rule"]) for f in json.loads(done.stdout)["findings"]}
    assert ("excess", "gw/rules/forwards.conf:8") in found and ("nat", "gw/rules/forwards.conf:7") in found
    assert all(rule.startswith("gw/rules/forwards.conf:") for _, rule in found), found


def test_a_missing_include_through_the_cli_is_one_line_exit_2(tmp_path: Path) -> None:
    write(tmp_path, SPLIT)
    (tmp_path / "gw/rules/hosts.conf").unlink()
    done = cli(tmp_path, "audit", str(MATRIX), "-f", "gw", "-r", "gw/pf.conf")
    assert done.returncode == 2
    assert done.stderr == f'error: gw/pf.conf:4: include "./rules/hosts.conf": no such file (looked for {tmp_path}/gw/rules/hosts.conf)\n'


def test_the_dialect_is_told_by_the_included_files_too(tmp_path: Path) -> None:
    # FreeBSD's old-style `rdr on` only in the included file: `wan` (no unit number) is then an
    # interface FreeBSD may have renamed, where OpenBSD's reading takes it for an interface group
    write(tmp_path, {"pf.conf": "include 'nat.conf'\nblock all\npass in on wan proto tcp to port 22\npass out\n",
                     "nat.conf": "rdr on wan proto tcp to port 80 -> 10.0.0.5\n"})
    path = tmp_path / "pf.conf"

    def groups(ruleset: Ruleset) -> list[str]:
        return [m.text for r in chain(ruleset, "in").rules for m in r.matches if isinstance(m, Unmodelled)]

    read_so = pf.parse_ruleset(path.read_text(), str(path))
    assert read_so == pf.parse_ruleset(path.read_text(), str(path), dialect="freebsd") and groups(read_so) == []
    assert groups(pf.parse_ruleset(path.read_text(), str(path), dialect="openbsd")) == ["interface group 'wan' (its members are known only on the firewall)"]


def test_an_include_inside_an_anchor_s_braces_takes_the_anchor_s_conditions(tmp_path: Path) -> None:
    write(tmp_path, {"pf.conf": 'block all\npass out\nanchor "dmz" in on em0 {\n  include "dmz.conf"\n}\n',
                     "dmz.conf": "pass in proto tcp to 10.0.0.5 port 22\n"})
    j = Judge(read(tmp_path / "pf.conf"), IFACES)
    assert j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "pass"
    assert j.fate("em1", "em0", "10.0.0.7", "10.0.0.5", TCP, 22) == "block"

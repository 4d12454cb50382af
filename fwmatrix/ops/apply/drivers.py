"""The backends' apply steps: one `Driver` per backend (nftables, iptables, pf), which
renders and validates a ruleset, snapshots and parses the live one, predicts the one
after the apply, loads it, and restores a snapshot. `DRIVERS` names them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset
from fwmatrix.netns import NetNamespace, have, run_private, tool_path, unique_name
from fwmatrix.ops.apply.executors import Executor, NamespaceExecutor
from fwmatrix.targets import backend as backend_module

Snapshot = dict[str, str]  # saved file name -> text
Own = tuple[tuple[str, str], ...]  # fwmatrix's own nftables tables: (family, name)


@dataclass(frozen=True)
class Prediction:
    """The firewall's whole ruleset after the apply (IR), and fwmatrix's own part of it as text."""

    ruleset: Ruleset
    own_text: str


class Driver:
    """One backend's apply steps. `touched` is the normalised text of everything an apply
    may change: equal texts before and after mean the firewall runs what it ran."""

    name = ""
    models_input = True  # its live ruleset parses into input/output chains (anti-lockout can judge it)

    def render(self, ruleset: Ruleset) -> dict[str, str]:
        return backend_module(self.name).render_files(ruleset)

    def validate(self, ex: Executor, files: dict[str, str]) -> list[str]:
        return backend_module(self.name).check_files(files)

    def snapshot(self, ex: Executor) -> Snapshot:
        raise NotImplementedError

    def parse(self, snap: Snapshot) -> Ruleset:
        raise NotImplementedError

    def touched(self, snap: Snapshot, own: Own) -> str:
        raise NotImplementedError

    def own_text(self, snap: Snapshot, own: Own) -> str:
        return self.touched(snap, own)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        raise NotImplementedError

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        raise NotImplementedError

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        raise NotImplementedError


TABLE_HEAD_RE = re.compile(r"table (\S+) (\S+) \{\Z")


def nft_blocks(listing: str) -> dict[tuple[str, str], str]:
    """`nft list ruleset` text -> each table's block (from `table F N {` to its closing `}`)."""
    blocks: dict[tuple[str, str], str] = {}
    current: tuple[str, str] | None = None
    lines: list[str] = []
    for line in listing.splitlines():
        if current is None:
            head = TABLE_HEAD_RE.match(line)
            if head:
                current, lines = (head[1], head[2]), [line]
        else:
            lines.append(line)
            if line == "}":
                blocks[current] = "\n".join(lines) + "\n"
                current = None
    return blocks


class NftDriver(Driver):
    """nftables: the script replaces fwmatrix's own tables in one transaction; a restore
    replaces them (or removes them) the same way, and never touches other tables."""

    name = "nftables"
    LISTING, JSON = "ruleset.nft", "ruleset.json"

    def snapshot(self, ex: Executor) -> Snapshot:
        return {self.LISTING: ex.run(["nft", "list", "ruleset"]).stdout, self.JSON: ex.run(["nft", "-j", "list", "ruleset"]).stdout}

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends import nftables

        return nftables.parse_json(snap[self.JSON])

    def touched(self, snap: Snapshot, own: Own) -> str:
        blocks = nft_blocks(snap[self.LISTING])
        return "".join(blocks.get(table, "") for table in own)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        from fwmatrix.backends.nftables import SUFFIX

        # fwmatrix's tables as the kernel lists them: loaded alone into a private namespace
        proc = run_private(["sh", "-c", '"$0" -f - && "$0" list ruleset', tool_path("nft")], stdin=files[SUFFIX])
        if proc.returncode != 0:
            raise BackendError(f"nft refused the ruleset: {proc.stderr.strip()}")
        blocks = nft_blocks(proc.stdout)
        others = tuple(t for t in self.parse(snap).tables if (t.family, t.name) not in own)
        return Prediction(Ruleset(others + ruleset.tables, ruleset.header), "".join(blocks.get(t, "") for t in own))

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends.nftables import SUFFIX

        ex.run(["nft", "-f", "-"], stdin=files[SUFFIX])

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        blocks = nft_blocks(snap[self.LISTING])
        script = "".join(f"table {f} {n} {{}}\ndelete table {f} {n}\n" + blocks.get((f, n), "") for f, n in own)
        ex.run(["nft", "-f", "-"], stdin=script)


COUNTERS_RE = re.compile(r"\s*\[\d+:\d+\]\Z")


class IptablesDriver(Driver):
    """iptables (own-chains mode): the apply changes fwmatrix's FWM-* chains, the jumps to
    them, the policies of built-in chains and fwmatrix's ipsets; a restore puts back the
    whole nat and filter tables of each family (iptables-restore, atomic per table) and
    fwmatrix's ipsets, and leaves other tables (mangle, raw) and other sets alone."""

    name = "iptables"
    SAVES: ClassVar[dict[int, str]] = {4: "iptables.save", 6: "ip6tables.save"}
    IPSETS = "ipset.save"
    TABLES = ("nat", "filter")

    def snapshot(self, ex: Executor) -> Snapshot:
        from fwmatrix.backends.iptables import SAVE_TOOL

        snap = {self.SAVES[family]: ex.run([tool]).stdout for family, tool in SAVE_TOOL.items()}
        ipsets = ex.run(["ipset", "save"], check=False) if have("ipset") else None
        snap[self.IPSETS] = ipsets.stdout if ipsets is not None and ipsets.returncode == 0 else ""
        return snap

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends.iptables import SAVE_TOOL, parse_save

        tables = []
        for family, name in self.SAVES.items():
            tables += parse_save(snap[name], family, SAVE_TOOL[family], snap.get(self.IPSETS) or None).tables
        return Ruleset(tuple(tables))

    def _tables(self, snap: Snapshot) -> Iterator[tuple[int, str, list[str]]]:
        """(family, table, its lines without counters) for nat and filter; a table that is
        empty (built-in chains accepting, nothing else) is the same as no table."""
        from fwmatrix.backends.iptables import (
            _sections,  # the backend's reader of restore/save sections
        )

        for family, name in self.SAVES.items():
            sections = _sections(snap[name])
            for table in self.TABLES:
                lines = [COUNTERS_RE.sub("", line) for line in sections.get(table, [])]
                if not all(line.startswith(":") and line.split()[1] == "ACCEPT" for line in lines):
                    yield family, table, lines

    def _own_sets(self, snap: Snapshot) -> dict[str, list[str]]:
        """fwmatrix's ipsets in an `ipset save` text: name -> its create line, then its add lines."""
        from fwmatrix.backends.iptables import SET_PREFIX

        sets: dict[str, list[str]] = {}
        for line in snap.get(self.IPSETS, "").splitlines():
            words = line.split()
            if len(words) > 1 and words[0] in ("create", "add") and words[1].startswith(tuple(SET_PREFIX.values())):
                sets.setdefault(words[1], []).append(line)
        return sets

    def touched(self, snap: Snapshot, own: Own) -> str:
        out = [f"*{table} (IPv{family})\n" + "".join(f"{line}\n" for line in lines) for family, table, lines in self._tables(snap)]
        out += ["".join(f"{line}\n" for line in sorted(lines)) for _, lines in sorted(self._own_sets(snap).items())]
        return "".join(out)

    def own_text(self, snap: Snapshot, own: Own) -> str:
        from fwmatrix.backends.iptables import CHAIN_PREFIX

        out = []
        for family, table, lines in self._tables(snap):
            mine = [line for line in lines if line.startswith((f":{CHAIN_PREFIX}", f"-A {CHAIN_PREFIX}"))
                    or (line.startswith(":") and line.split()[1] != "-") or line.endswith(f"-j {CHAIN_PREFIX}{line.split()[1]}")]
            if mine:
                out.append(f"*{table} (IPv{family})\n" + "".join(f"{line}\n" for line in mine))
        out += ["".join(f"{line}\n" for line in lines) for _, lines in sorted(self._own_sets(snap).items())]
        return "".join(out)

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        """Replay: the live ruleset and the apply, in a scratch network namespace, read back."""
        from fwmatrix.backends import iptables

        with NetNamespace(unique_name("fwmapply")) as scratch:
            ex = NamespaceExecutor(scratch.name)
            if snap.get(self.IPSETS, "").strip():
                ex.run(["ipset", "restore"], stdin=snap[self.IPSETS])
            for family, name in self.SAVES.items():
                if snap[name].strip():
                    ex.run([iptables.RESTORE_TOOL[family]], stdin=snap[name])
            iptables.apply(files, ex.run)
            after = self.snapshot(ex)
        return Prediction(self.parse(after), self.own_text(after, own))

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends import iptables

        iptables.apply(files, ex.run)

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        from fwmatrix.backends.iptables import BUILTINS, RESTORE_TOOL, SET_PREFIX, _sections

        saved = self._own_sets(snap)
        existing = set(ex.run(["ipset", "list", "-n"], check=False).stdout.split()) if have("ipset") else set()
        script: list[str] = []
        for name, lines in saved.items():  # sets first: the restored rules may use them
            create, adds = lines[0], lines[1:]
            if name not in existing:
                script += [create, *adds]
                continue
            scratch = f"fwm-rb-{uuid.uuid4().hex[:12]}"  # filled aside and swapped in, as the apply does
            script += [create.replace(f"create {name} ", f"create {scratch} ", 1)]
            script += [a.replace(f"add {name} ", f"add {scratch} ", 1) for a in adds]
            script += [f"swap {scratch} {name}", f"destroy {scratch}"]
        if script:
            ex.run(["ipset", "restore"], stdin="\n".join(script) + "\n")
        for family, name in self.SAVES.items():
            sections = _sections(snap[name])
            text: list[str] = []
            for table in self.TABLES:
                lines = sections.get(table) or [f":{chain} ACCEPT [0:0]" for chain in BUILTINS[table]]
                text += [f"*{table}", *lines, "COMMIT"]
            ex.run([RESTORE_TOOL[family]], stdin="\n".join(text) + "\n")
        for name in ex.run(["ipset", "list", "-n"], check=False).stdout.split() if have("ipset") else ():
            if name.startswith(tuple(SET_PREFIX.values())) and name not in saved:
                ex.run(["ipset", "destroy", name])


class PfDriver(Driver):
    """pf: fwmatrix's pf.conf is the firewall's whole main ruleset (`pfctl -f`). The backup
    is the running ruleset as pfctl lists it (tables, translation and filter rules), loaded
    back with `pfctl -f`. Not runnable on Linux: tested with a fake executor only."""

    name = "pf"
    models_input = False  # the parsed pf ruleset holds forwarding only
    CONF = "pf.conf"

    def validate(self, ex: Executor, files: dict[str, str]) -> list[str]:
        from fwmatrix.backends.pf import SUFFIX

        problems = backend_module(self.name).check_files(files)
        proc = ex.run(["pfctl", "-nf", "-"], stdin=files[SUFFIX], check=False)
        if proc.returncode != 0:
            problems += [f"pfctl -nf: {line}" for line in (proc.stderr or proc.stdout).splitlines() if line.strip()] or [f"pfctl -nf failed ({proc.returncode})"]
        return problems

    def snapshot(self, ex: Executor) -> Snapshot:
        parts = []
        for name in ex.run(["pfctl", "-sT"], check=False).stdout.split():
            members = ex.run(["pfctl", "-t", name, "-T", "show"]).stdout.split()
            parts.append(f"table <{name}> {{ {' '.join(members)} }}")
        parts.append(ex.run(["pfctl", "-sn"], check=False).stdout.rstrip())  # FreeBSD: translation first
        parts.append(ex.run(["pfctl", "-sr"]).stdout.rstrip())
        return {self.CONF: "\n".join(p for p in parts if p) + "\n"}

    def parse(self, snap: Snapshot) -> Ruleset:
        from fwmatrix.backends.pf import parse_ruleset

        return parse_ruleset(snap[self.CONF], "pfctl -sr")

    def touched(self, snap: Snapshot, own: Own) -> str:
        return snap[self.CONF]

    def predict(self, snap: Snapshot, files: dict[str, str], ruleset: Ruleset, own: Own) -> Prediction:
        from fwmatrix.backends.pf import SUFFIX, parse_ruleset

        return Prediction(parse_ruleset(files[SUFFIX], "the new pf.conf"), files[SUFFIX])

    def load(self, ex: Executor, files: dict[str, str]) -> None:
        from fwmatrix.backends.pf import SUFFIX

        ex.run(["pfctl", "-f", "-"], stdin=files[SUFFIX])

    def restore(self, ex: Executor, snap: Snapshot, own: Own) -> None:
        ex.run(["pfctl", "-f", "-"], stdin=snap[self.CONF])


DRIVERS: dict[str, Driver] = {d.name: d for d in (NftDriver(), IptablesDriver(), PfDriver())}


def own_tables(ruleset: Ruleset) -> Own:
    return tuple((t.family, t.name) for t in ruleset.tables)

"""The commands of restore input, applied to a table as iptables-restore applies them.

iptables-save writes only `:CHAIN` declarations and `-A` rules, but restore input written by
hand (rules.v4, a script's heredoc) uses every command: `-I`, `-N`, `-P`, `-D`, `-R`, `-F`,
`-X`, `-Z`, `-E`, and `-4`/`-6` to share one file between iptables-restore and
ip6tables-restore (each tool skips the lines marked for the other). Each command changes
the table as it stands at its line; what iptables refuses (a chain that exists twice, a
rule number beyond the chain, deleting a rule that is not there, a chain still referenced)
is refused with iptables' reason. The semantics are those documented and of
iptables-legacy-restore 1.8.9; iptables-nft-restore 1.8.9 accepts the same input in
`--test` but fails on some of it when loading (`-R` crashes, `-E` and `-X` after `-F`
fail, `-F` without a chain leaves rules): its result is the documented one or an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fwmatrix.backends.iptables.reader import _Block, _Malformed, _Option, _proto, _Word
from fwmatrix.ir import Jump, Rule

FAMILY_MARKS = {"-4": 4, "--ipv4": 4, "-6": 6, "--ipv6": 6}
# command -> (how it is written, the reason iptables gives when it cannot)
ONE_CHAIN = ("-N", "-E", "-P")


@dataclass
class KernelRule:
    """One kernel rule: its IR rules (none for a rule that decides nothing), the name of its
    target (for -X and -E), and what it was written as (to find it again for `-D CHAIN RULE`:
    iptables' own options, the matches, the target's options, its addresses)."""

    rules: list[Rule]
    target: str
    written: tuple[list[_Option], list[_Block], _Block | None, tuple]

    def same_as(self, other: KernelRule) -> bool:
        return self.target == other.target and _signature(*self.written) == _signature(*other.written)


def _signature(core: list[_Option], blocks: list[_Block], target: _Block | None, addresses: tuple) -> tuple:
    """What makes kernel rules the same for -D: iptables' own options in any order with their
    values as the kernel holds them (addresses as networks, protocols as numbers), the matches
    in order, the target's options."""
    def value(o: _Option) -> str:
        return "" if not o.values else str(_proto(o.value)) if o.name == "-p" else o.value
    own = tuple(sorted((o.name, o.negate, value(o)) for o in core if o.name not in ("-s", "-d")))
    options = (target.goto, tuple(o.shown() for o in target.options)) if target is not None else ()
    return own, addresses, tuple(b.shown() for b in blocks if b.kind == "match"), options


@dataclass
class TableState:
    """A table's chains as the restore input builds them, line by line."""

    table: str
    builtins: frozenset[str]
    policies: dict[str, str | None]  # declared chain -> policy (None: a user chain)
    chains: dict[str, list[KernelRule]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.policies:
            self.chains.setdefault(name, [])

    def known(self, chain: str) -> bool:
        return chain in self.chains or chain in self.builtins

    def rules_of(self, chain: str) -> list[KernelRule]:
        if not self.known(chain):
            raise _Malformed(f"chain {chain} is not declared in table {self.table}")
        return self.chains.setdefault(chain, [])  # a built-in chain used without its line: iptables made it

    def user_chain(self, chain: str) -> list[KernelRule]:
        if chain in self.builtins:
            raise _Malformed(f"{chain} is a built-in chain of table {self.table}")
        if chain not in self.chains:
            raise _Malformed(f"chain {chain} does not exist in table {self.table} (iptables: No chain/target/match by that name)")
        return self.chains[chain]

    # -- rules -------------------------------------------------------------------------

    def put(self, command: str, chain: str, number: int | None, kernel: list[KernelRule]) -> None:
        """-A (number None), -I CHAIN N, -R CHAIN N."""
        rules = self.rules_of(chain)
        if command == "-A":
            rules.extend(kernel)
        elif command == "-I":
            if number is None or number > len(rules) + 1:
                raise _Malformed(f"-I {chain} {number}: the chain has only {len(rules)} rules so far (iptables: index of insertion too big)")
            rules[number - 1 : number - 1] = kernel[::-1]  # iptables inserts each kernel rule at N in turn
        else:
            if len(kernel) != 1:
                raise _Malformed(f"-R {chain} {number}: a replacement is one rule (iptables: one source and destination address)")
            self._check_number(command, chain, number, rules)
            rules[number - 1] = kernel[0]  # type: ignore[operator]

    def delete_at(self, chain: str, number: int) -> None:
        rules = self.rules_of(chain)
        self._check_number("-D", chain, number, rules)
        del rules[number - 1]

    def delete_matching(self, chain: str, kernel: list[KernelRule]) -> None:
        """-D CHAIN RULE: the first rule the same as each kernel rule the line makes."""
        rules = self.rules_of(chain)
        for wanted in kernel:
            index = next((i for i, rule in enumerate(rules) if rule.same_as(wanted)), None)
            if index is None:
                raise _Malformed(f"-D {chain}: no such rule in the chain (iptables: Bad rule (does a matching rule exist in that chain?))")
            del rules[index]

    @staticmethod
    def _check_number(command: str, chain: str, number: int | None, rules: list[KernelRule]) -> None:
        if number is None or number > len(rules):
            raise _Malformed(f"{command} {chain} {number}: the chain has only {len(rules)} rules so far (iptables: Index of deletion too big)")

    # -- chains ------------------------------------------------------------------------

    def command(self, command: str, args: list[_Word]) -> None:
        """-N, -P, -F, -X, -Z, -E with their words (after the command)."""
        words = [w.text for w in args]
        if command in ONE_CHAIN and not words:
            raise _Malformed(f"{command} needs a chain name")
        if command == "-N":
            self._expect(command, words, 1)
            if self.known(words[0]):
                raise _Malformed(f"-N {words[0]}: the chain exists already (iptables: Chain already exists)")
            self.chains[words[0]] = []
            self.policies[words[0]] = None
        elif command == "-P":
            self._expect(command, words, 2)
            chain, policy = words
            if chain not in self.builtins:
                raise _Malformed(f"-P {chain}: only built-in chains of table {self.table} have a policy")
            if policy not in ("ACCEPT", "DROP"):
                raise _Malformed(f"-P {chain} {policy}: the policy is ACCEPT or DROP")
            self.rules_of(chain)
            self.policies[chain] = policy.lower()
        elif command == "-F":
            for chain in self._chains(command, words, every=list(self.chains)):
                self.rules_of(chain).clear()
        elif command == "-X":
            for chain in self._chains(command, words, every=[c for c in self.chains if c not in self.builtins]):
                self._delete_chain(chain)
        elif command == "-Z":
            self._expect(command, words[:1], len(words[:1]))
            if len(words) > 2 or (len(words) == 2 and not words[1].isdigit()):
                raise _Malformed(f"-Z {' '.join(words)}: -Z [CHAIN [NUMBER]]")
            if words:
                self.rules_of(words[0])  # counters only: nothing to audit
        elif command == "-E":
            self._expect(command, words, 2)
            self._rename(*words)
        else:
            raise _Malformed(f"{command}: not a command of restore input")

    def _chains(self, command: str, words: list[str], every: list[str]) -> list[str]:
        if len(words) > 1:
            raise _Malformed(f"{command} takes at most one chain, not {' '.join(words)}")
        return every if not words else [words[0]] if self.rules_of(words[0]) is not None else []

    @staticmethod
    def _expect(command: str, words: list[str], count: int) -> None:
        if len(words) != count:
            raise _Malformed(f"{command} takes {count} word{'s' if count > 1 else ''} here, not {len(words)}: {' '.join(words) or '(none)'}")

    def _delete_chain(self, chain: str) -> None:
        rules = self.user_chain(chain)
        if rules:
            raise _Malformed(f"-X {chain}: the chain still has {len(rules)} rules (iptables: Directory not empty)")
        if any(kernel.target == chain for rules in self.chains.values() for kernel in rules):
            raise _Malformed(f"-X {chain}: rules still jump to it (iptables: Too many links)")
        del self.chains[chain]
        del self.policies[chain]

    def _rename(self, old: str, new: str) -> None:
        self.user_chain(old)
        if self.known(new):
            raise _Malformed(f"-E {old} {new}: chain {new} exists already (iptables: File exists)")
        self.chains = {new if name == old else name: rules for name, rules in self.chains.items()}
        self.policies = {new if name == old else name: policy for name, policy in self.policies.items()}
        for rules in self.chains.values():
            for kernel in rules:
                kernel.rules = [_renamed(rule, old, new) for rule in kernel.rules]
                kernel.target = new if kernel.target == old else kernel.target


def _renamed(rule: Rule, old: str, new: str) -> Rule:
    if isinstance(rule.action, Jump) and rule.action.chain == old:
        return Rule(rule.matches, Jump(new, rule.action.goto), rule.comment, rule.origin)
    return rule


def unmarked(words: list[_Word], family: int) -> list[_Word] | None:
    """The line without its `-4`/`-6` marks; None when it is marked for the other family
    (iptables-restore skips `-6` lines, ip6tables-restore `-4` lines)."""
    marks = {FAMILY_MARKS[w.text] for w in words if not w.quoted and w.text in FAMILY_MARKS}
    if len(marks) > 1:
        raise _Malformed("-4 and -6 in one line")
    if marks and marks != {family}:
        return None
    return [w for w in words if w.quoted or w.text not in FAMILY_MARKS] if marks else words

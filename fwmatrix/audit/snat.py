"""Source NAT judged against the matrix: what the postrouting nat chains translate.

A firewall whose intent has source NAT (`snat:` openings it translates) is judged here: the
postrouting nat base chains are walked in priority order, first match within a chain. A
`snat to A` or `masquerade` sets the new connection's source and ends the walk (netfilter
sets up one mapping per connection); an accept ends that chain without one (the next nat
chain still looks); a drop ends it all. What no rule translates leaves untranslated. Rules
fwmatrix cannot read exactly (a goto, a map, a snat to a range or port, an unmodelled
match) make the translation of what they reach unknown; a jump to a chain of the table is
followed (its return coming back).

`nat` findings: an opening's new connections that leave (the forward chains may pass them) untranslated (missing), translated
to another address than the matrix says (wrong), or with an unknown translation; and, on
such a firewall, forwarded new connections that are translated though no opening asks for
it. On every firewall, a rule that new connections reach whose translation fwmatrix cannot
read (an unknown target such as FULLCONENAT, an unmodelled statement, a snat to a range, a
goto, a map) is an `unmodelled` finding saying so: the translation is judged both ways, and
without it an audit could say clean while the source address is unknown. Replies are never judged: connection tracking translates them back, and a reply is no
new connection (so nothing from the DMZ towards the internet ever needs a translation).
A firewall without source NAT in its intent is not judged here. pf's `nat-to` is read back
into such a chain by backends/pf/readnat.py.
"""

from __future__ import annotations

from netaddr import IPNetwork

from fwmatrix.audit.evaluate import Effective
from fwmatrix.audit.evaluate.matches import rule_space
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.compile.intent import FirewallIntent, Flow, Snat
from fwmatrix.ir import MAX_JUMP_DEPTH, Jump, Masquerade, Ruleset, Snat as SnatAction, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.space import Interfaces, Region, Space, ct_bits

CT_NEW_ANY = ct_bits("new")  # translated by a port forward or not
MASQUERADE = "masquerade"
UNKNOWN = "unknown"


def snat_findings(fw_intent: FirewallIntent, ruleset: Ruleset, ifaces: Interfaces, effective: Effective) -> list:
    from fwmatrix.audit.findings import Finding, flow_space  # findings imports this module

    if not fw_intent.snats and not _may_translate_unknowably(ruleset):
        return []
    full = Space.full(ifaces)
    regions, unread = _translations(ruleset, ifaces)
    findings = [Finding("unmodelled", f"fwmatrix cannot model {why} in a source NAT chain: the source address the new connections "
                                      "it reaches leave with is unknown; judged both ways (translated to any address, or not)", None, origin)
                for origin, why in unread.items()]
    if not fw_intent.snats:
        return findings  # the matrix asks no translation here: only what cannot be read is said
    wanted_all = Space.empty(ifaces)
    given = ruleset.families if ruleset.families is not None else frozenset({4, 6})  # an iptables-save covers its family only
    judged = [s for s in fw_intent.snats if s.family in given]
    # only what may leave can be translated: what the forward chain drops is its `missing` finding,
    # whatever a nat chain says of it (pf translates on the out rule, so only what that rule passes)
    leaving = Space(ifaces, [b for g in effective.forwarded + effective.uncertain for b in g.space.boxes])
    for opening_index in sorted({s.opening.index for s in judged}):
        snats = [s for s in judged if s.opening.index == opening_index]
        opening = snats[0].opening
        lines: list[Region] = []
        for snat in snats:
            wanted = flow_space(full, _as_flow(snat), CT_NEW_ANY).intersect(full.make(ct=CT_NEW_ANY)).intersect(leaving)
            wanted_all = wanted_all.union(wanted)
            expected = MASQUERADE if snat.address is None else str(snat.address)
            rest = wanted
            for space, target, origin in regions:
                hit = rest.intersect(space)
                if not hit:
                    continue
                rest = rest.subtract(space)
                if target == UNKNOWN:
                    said = "; see 'unmodelled'" if origin in unread else ""
                    lines += [r.noted(f"translated as fwmatrix cannot tell ({origin}{said})") for r in hit.regions()]
                elif target != expected:
                    lines += [r.noted(f"translated to {target}, not {expected} ({origin})") for r in hit.regions()]
            lines += [r.noted(f"not translated (the matrix says {expected})") for r in rest.regions()]
        if lines:
            findings.append(Finding("nat", f"source NAT of opening '{opening.name}' (row {opening.index}) is missing or wrong",
                                    opening, "", tuple(lines)))
    forwarded_new = Space(ifaces, [b for g in effective.forwarded for b in g.space.boxes]).intersect(full.make(ct=CT_NEW_ANY))
    for space, target, origin in regions:
        extra = forwarded_new.intersect(space).subtract(wanted_all)
        if extra:
            findings.append(Finding("nat", f"forwarded new connections are source-translated ({target}), but no opening asks for it",
                                    None, origin, extra.regions()))
            forwarded_new = forwarded_new.subtract(extra)
    return findings


def _translations(ruleset: Ruleset, ifaces: Interfaces) -> tuple[list[tuple[Space, str | None, str]], dict[str, str]]:
    """(packets, translation, rule) for new connections in the postrouting nat chains, first
    decision first (translation None: the chain accepts them untranslated); and by rule, what
    fwmatrix cannot read of the translations it reaches (`_unread`)."""
    reading = Reading(ruleset, ifaces, assume_unmodelled_match=True)
    out: list[tuple[Space, str | None, str]] = []
    unread: dict[str, str] = {}
    decided = Space.empty(ifaces)
    for table, chain in reading.base_chains("postrouting", "nat"):
        scope, _ = reading.scope(table, chain)
        left = scope.intersect(reading.full.make(ct=CT_NEW_ANY)).subtract(decided)
        _, done = _walk(reading, table, chain, left, out, unread, 0)
        decided = decided.union(done)
    return out, unread


def _may_translate_unknowably(ruleset: Ruleset) -> bool:
    """Whether a table with a postrouting nat chain holds an action `_walk` cannot read (cheap:
    without one, a firewall the matrix gives no source NAT needs no walk)."""
    return any(_unread(rule.action) is not None for table in ruleset.tables
               if any(c.hook == "postrouting" and c.type == "nat" for c in table.chains)
               for chain in table.chains for rule in chain.rules)


def _unread(action: object) -> str | None:
    """Why `_walk` cannot tell the translation after `action`, or None when it can."""
    if isinstance(action, UnmodelledAction):
        return action.text
    if isinstance(action, Jump) and action.goto:
        return f"goto {action.chain} (not followed)"
    if isinstance(action, VerdictMap):
        return f"a verdict map{f' @{action.map_name}' if action.map_name else ''} (not followed)"
    return None


def _walk(reading: Reading, table, chain, left: Space, out: list, unread: dict[str, str], depth: int) -> tuple[Space, Space]:
    """One chain's rules over `left`: the translations found go to `out`, why one cannot be
    read to `unread` (by rule); returns what falls through it (to the rule after the jump, or
    the chain's policy) and what it decided
    (translated or dropped). A jump (iptables' own chains: POSTROUTING -j FWM-POSTROUTING) is
    followed, its return coming back; a goto, a map or a chain too deep is an unknown translation."""
    decided = returned = Space.empty(left.ifaces)
    for position, rule in enumerate(chain.rules, start=1):
        origin = rule.origin or f"{table.family} {table.name} {chain.name} rule {position}"
        found = rule_space(reading, table, rule, origin)
        if found is None or not left:
            continue
        space, uncertain = found
        hit = left.intersect(space)
        if not hit:
            continue
        action = rule.action
        if isinstance(action, Jump) and not action.goto and not uncertain and depth < MAX_JUMP_DEPTH \
                and (target := table.find_chain(action.chain)) is not None and target.hook is None:
            back, done = _walk(reading, table, target, hit, out, unread, depth + 1)
            left = left.subtract(hit).union(back)
            decided = decided.union(done)
            continue
        if isinstance(action, Verdict) and action.kind == "return":
            if not uncertain:  # back to the caller, the rest of this chain skipped
                returned = returned.union(hit)
                left = left.subtract(hit)
            continue
        if isinstance(action, SnatAction):
            target: str | None = str(action.address.ip) if not uncertain else UNKNOWN
        elif isinstance(action, Masquerade):
            target = MASQUERADE if not uncertain else UNKNOWN
        elif isinstance(action, Verdict) and action.kind in ("accept", "drop"):
            left = left.subtract(hit) if not uncertain else left
            if action.kind == "drop" and not uncertain:
                decided = decided.union(hit)
            continue
        elif action is None:
            continue
        else:
            target = UNKNOWN  # a goto, a map, an action fwmatrix cannot read: the translation is not known
            why = _unread(action) or (f"jump to {action.chain} (not followed)" if isinstance(action, Jump) and not uncertain else None)
            if why is not None:  # (an unmodelled match is said by the forward walk of the same chain)
                unread.setdefault(origin, why)
        out.append((hit, target, origin))
        left = left.subtract(hit)
        decided = decided.union(hit)
    return left.union(returned), decided


def _as_flow(snat: Snat) -> Flow:
    return Flow(snat.opening, "*", snat.out_iface, snat.family, snat.sources, snat.destinations, snat.parts)


__all__ = ["snat_findings"]

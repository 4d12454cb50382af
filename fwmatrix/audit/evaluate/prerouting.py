"""Before the forward decision: filtering chains that drop packets early (netdev
and inet ingress on the in-interface, raw and mangle prerouting), and nat chains
whose first DNAT translates a new connection's destination (their drops are
judged both ways)."""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.audit.evaluate.chains import ChainResult, chain_name, walk
from fwmatrix.audit.evaluate.effective import LOCAL, DnatRegion, Grant
from fwmatrix.audit.evaluate.forward import NAT_DROPS
from fwmatrix.audit.evaluate.reading import CONNTRACK_PRIORITY, Reading
from fwmatrix.audit.evaluate.untracked import as_untracked, drops_as_untracked, untracked_region
from fwmatrix.ir import Chain
from fwmatrix.space import CT_ALL, CT_DNAT, PORTS_ALL, V4_ALL, V6_ALL, Box, Remaining, Space, ct_bits, iv_and, iv_or

DSTNAT_PRIORITY = -100  # NF_IP_PRI_NAT_DST: filtering chains below it see the packet before DNAT


class Drops:
    """What chains before the forward decision drop: in this reading, and of that what
    they drop whatever unmodelled constructs (and unnamed devices) do."""

    def __init__(self) -> None:
        self.boxes: list[Box] = []
        self.certain: list[Box] = []
        # the same, split by whether the chain runs before DNAT (it sees the arriving packet)
        self.arriving: list[Box] = []
        self.arriving_certain: list[Box] = []
        self.later: list[Box] = []
        self.later_certain: list[Box] = []
        self.arriving_chains: list[str] = []  # the chains before DNAT that drop

    def add(self, chain: Chain, seen: Space, result: ChainResult, known: bool) -> None:
        """A base chain's drops over the packets it saw; its policy drops what it did not accept
        or translate. `known`: whether the chain surely sees them (its device is named)."""
        dropped = [(b, id(g) not in result.uncertain_drops) for g in result.dropped for b in g.space.boxes]
        if chain.policy == "drop":
            kept = Space(seen.ifaces, [b for g in result.accepted + result.maybe_accepted for b in g.space.boxes]
                         + [b for d in result.dnats for b in d.space.boxes])
            dropped += [(b, True) for b in seen.subtract(kept).boxes]
        certain = [b for b, sure in dropped if sure and known]
        self.boxes += [b for b, _ in dropped]
        self.certain += certain
        before_dnat = chain.hook == "ingress" or chain.type == "nat" or chain.priority < DSTNAT_PRIORITY
        (self.arriving if before_dnat else self.later).extend(b for b, _ in dropped)
        (self.arriving_certain if before_dnat else self.later_certain).extend(certain)
        if before_dnat and dropped:
            self.arriving_chains.append(f"{chain.hook} chain {chain.name} (priority {chain.priority})")

    def spaces(self, reading: Reading) -> tuple[Space, Space]:
        return Space(reading.ifaces, self.boxes), Space(reading.ifaces, self.certain)

    def of_forwarded(self, reading: Reading, dnats: list[DnatRegion]) -> tuple[Space, Space]:
        """The drops as the forward path's packets know them: a drop before DNAT saw the
        arriving packet, so it takes no new connection that DNAT translated (the DNAT
        regions lose what it takes). The later packets of a translated connection it saw
        with their original destination (answers with the addresses forward sees): where
        it drops by a destination that a port forward translates from or to, whether it
        drops them is judged both ways. Other states are judged as forward sees them."""
        plain = reading.full.make(ct=CT_ALL & ~ct_bits("new", translated=True))
        translated = _translated_destinations(reading, dnats)
        certain = [replace(b, ct=b.ct & ~LATER_TRANSLATED) if b.ct & LATER_TRANSLATED and not _whatever_destination(b)
                   and translated.intersect(Space(reading.ifaces, [b])) else b for b in self.arriving_certain]
        # what they drop by the original destination, where forward sees those packets: maybe dropped
        mapped = _as_translated(reading, [b for b in self.arriving if b.ct & LATER_TRANSLATED and not _whatever_destination(b)], dnats)
        if mapped or any(b.ct != c.ct for b, c in zip(self.arriving_certain, certain)):
            for name in dict.fromkeys(self.arriving_chains):
                reading.note_unmodelled(name, LATER_PACKETS)

        def forwarded(arriving: list[Box], later: list[Box]) -> Space:
            return Space(reading.ifaces, [b for b in arriving if b.ct]).intersect(plain).union(Space(reading.ifaces, later))

        return forwarded(self.arriving + mapped, self.later), forwarded(certain, self.later_certain)


LATER_TRANSLATED = CT_DNAT & ~ct_bits("new", translated=True)  # a translated connection's packets after the first
LATER_PACKETS = ("drops by destination before DNAT, which the later packets of a translated connection reach with "
                 "their original destination (forward sees the translated one)")


def _translated_destinations(reading: Reading, dnats: list[DnatRegion]) -> Space:
    """The destinations (address and port) the port forwards translate from and to."""
    boxes = []
    for region in dnats:
        boxes += [reading.full.make(dst=b.dst, dport=b.dport).boxes[0] for b in region.space.boxes]
        port = ((region.port.low, region.port.high),) if region.port is not None else PORTS_ALL
        boxes += reading.full.make(dst=region.target, dport=port).boxes
    return Space(reading.ifaces, boxes)


def _as_translated(reading: Reading, dropped: list[Box], dnats: list[DnatRegion]) -> list[Box]:
    """The later packets of translated connections among `dropped` (arriving coordinates), with
    the destination forward sees them with."""
    out = []
    for region in dnats:
        arriving = Space(reading.ifaces, [replace(b, ct=LATER_TRANSLATED) for b in region.space.boxes])
        hit = arriving.intersect(Space(reading.ifaces, [replace(b, ct=b.ct & LATER_TRANSLATED) for b in dropped]))
        port = ((region.port.low, region.port.high),) if region.port is not None else None
        out += [replace(b, dst=region.target, dport=port or b.dport) for b in hit.boxes]
    return out


def _whatever_destination(box: Box) -> bool:
    """Whether the box holds every destination address (of its families) and port: a drop of it
    does not depend on what DNAT changes."""
    return (iv_and(box.dst, V4_ALL) in ((), V4_ALL) and iv_and(box.dst, V6_ALL) in ((), V6_ALL)
            and iv_and(box.dport, PORTS_ALL) in ((), PORTS_ALL))


def early_drops(reading: Reading) -> Drops:
    """What filtering chains at ingress and prerouting drop. Ingress and prerouting before
    DNAT (priority below dstnat) see the arriving packet, after it the translated one; both
    are judged here on the packet as it arrives or is forwarded. What prerouting's notrack
    rules take out of connection tracking (before conntrack) is left in `reading.notracked`."""
    drops = Drops()
    for hook in ("ingress", "prerouting"):
        for table, chain in reading.base_chains(hook, "filter"):
            seen, known = reading.scope(table, chain)
            result = walk(reading, table, chain, Remaining(seen), depth=0)
            if hook == "prerouting" and chain.priority < CONNTRACK_PRIORITY:
                reading.notracked += [g for g in result.notracked if g.space]
                reading.maybe_notracked += [g for g in result.maybe_notracked if g.space]
            elif hook == "prerouting":  # after conntrack: what notrack took arrives untracked
                _as_untracked(reading, result)
            drops.add(chain, seen, result, known)
    return drops


def _as_untracked(reading: Reading, result: ChainResult) -> None:
    """A chain's decisions after conntrack as the packets notrack took live them (see untracked.py)."""
    notracked, maybe = reading.notracked, reading.maybe_notracked
    result.accepted = as_untracked(reading.ifaces, result.accepted, notracked, maybe)
    result.cover = None  # made for the accepts as walked
    result.maybe_accepted = as_untracked(reading.ifaces, result.maybe_accepted, notracked, maybe)
    result.dropped, result.uncertain_drops = drops_as_untracked(reading.ifaces, result.dropped, result.uncertain_drops, notracked, maybe)


def dnat_regions(reading: Reading, drops: Drops) -> list[DnatRegion]:
    """The new, untranslated connections each DNAT rule translates: the nat chains in
    priority order, each over what no earlier chain translated. Call after
    `early_drops`, which finds the untracked packets. What the nat chains drop (a rule,
    a policy) is added to `drops`, judged both ways."""
    regions: list[DnatRegion] = []
    tracked_new = reading.full.make(ct=ct_bits("new", translated=False)).subtract(untracked_region(reading.ifaces, reading.notracked))
    untranslated = Remaining(tracked_new)  # NAT never sees an untracked packet
    for table, chain in reading.base_chains("prerouting", "nat"):
        untranslated_in_table = untranslated.intersect(reading.family_space(table))
        result = walk(reading, table, chain, Remaining(untranslated_in_table), depth=0)
        if result.dropped or chain.policy == "drop":
            # The kernel runs a nat chain only once its namespace has a nat statement (Linux
            # 6.18; tested in the lab): whether these drops drop is judged both ways.
            reading.note_unmodelled(chain_name(table, chain), NAT_DROPS)
            drops.add(chain, untranslated_in_table, result, known=False)
        for region in result.dnats:
            regions.append(region)
            untranslated.remove(region.space)
    return regions


REDIRECTED = ("redirects to the firewall itself: its input chain sees the packet translated, to the address of the "
              "interface it came in by{port}, and decides it differently by that address: judged both ways")


def delivered_locally(reading: Reading, redirects: list[DnatRegion], forwarded: list[Grant]) -> list[Grant]:
    """The grants without what the redirects take: a redirected new connection is delivered
    to the firewall itself (or dropped, on an interface without an address), never forwarded.
    Where the firewall's input is judged (an out-interface LOCAL, audit/local.py) the input
    chain sees it translated: to the address of the interface it came in by, which is not
    worked out here, and port P. Where the chain accepts, or refuses, the translated packets
    whatever that address is, the redirected ones are accepted (or not) exactly; else they
    are judged both ways (left in `reading.upper` only)."""
    taken = Space(reading.ifaces, [b for d in redirects for b in d.space.boxes])
    certain = Space(reading.ifaces, [b for d in redirects if not d.uncertain for b in d.space.boxes])
    accepted: list[Grant] = []
    upper = reading.upper
    reading.upper = [Grant(g.space.subtract(certain), g.origin) for g in upper]
    if LOCAL in reading.ifaces.names:
        to_firewall = reading.full.make(oif=reading.ifaces.mask(LOCAL))
        grants = Space(reading.ifaces, [b for g in forwarded for b in g.space.boxes])
        maybe = grants.union(Space(reading.ifaces, [b for g in upper for b in g.space.boxes]))
        for region in redirects:
            local = region.space.intersect(to_firewall)
            if not local:
                continue
            seen = _as_redirected(reading, region, local)
            if not seen.subtract(grants):
                accepted.append(Grant(local, region.origin))  # accepted whatever the address
            elif seen.intersect(maybe):
                reading.upper.append(Grant(local, region.origin))
                reading.note_unmodelled(region.origin, REDIRECTED.format(port=f", port {region.port}" if region.port else ""))
    reading.upper += accepted
    return [Grant(g.space.subtract(taken), g.origin) for g in forwarded] + accepted


def _as_redirected(reading: Reading, region: DnatRegion, local: Space) -> Space:
    """The packets of `local` as the input chain sees them once redirected: to any address of
    their family (one of the firewall's), port P, a translated new connection."""
    boxes = []
    for box in local.boxes:
        dst = iv_or(V4_ALL if iv_and(box.dst, V4_ALL) else (), V6_ALL if iv_and(box.dst, V6_ALL) else ())
        dport = ((region.port.low, region.port.high),) if region.port is not None else box.dport
        boxes.append(replace(box, dst=dst, dport=dport, ct=ct_bits("new", translated=True)))
    return Space(reading.ifaces, boxes)

"""The two directions of issue 13 for the audit's packet spaces, measured on one input
(CPU seconds of this process): (a) boxes, the comparison in bulk — one subtraction of all
the openings from what is forwarded (and of what is forwarded from the openings), then
only the openings and rules that meet what is left — against the comparison per opening
and per rule; (b) binary decision diagrams (`dd.cudd`, CUDD in the wheel: `pip install
dd`, not a dependency of fwmatrix): the chain walk over the same rule matches the box
evaluation asked about, in order (remaining & ~match), and the comparison of openings
with what is forwarded, each box turned into a BDD (addresses as 129-bit lines, CIDR
blocks as cubes (BDD.cube); values cached).

    .venv/bin/python bench/space_directions.py MATRIX NFT_JSON [WALK_CPU_LIMIT]

The BDD walk stops after WALK_CPU_LIMIT CPU seconds (default: none) and says how far it
got. Results and the conclusion: bench/results/audit.md, "Boxes or BDDs".
"""
import json, sys, resource
from fwmatrix.gcpause import gc_paused
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.compile.intent import build_intent
from fwmatrix.targets import backend
from fwmatrix.audit import findings as F
from fwmatrix.audit.evaluate import evaluate, interfaces_of, OwnAddresses
from fwmatrix import space as S
from netaddr import IPNetwork

def cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
matrix, rules_path = sys.argv[1:3]
with gc_paused():
    intent = build_intent(load_matrix(matrix))
    ruleset = backend("nftables").parse_json(json.load(open(rules_path)))
    fw_intent = intent.firewalls["edge"]; fw = fw_intent.firewall
    ifaces = interfaces_of(ruleset, list(fw.interfaces))
    own = OwnAddresses(tuple(IPNetwork(a) for a in fw.public.values()), complete=False)
    # record every rule match the chain walks ask about, in order (for the BDD walk)
    matches = []
    real = S.Remaining.intersect
    def rec(self, space):
        matches.append((id(self), space)); return real(self, space)
    S.Remaining.intersect = rec
    t = cpu(); effective = evaluate(ruleset, ifaces, own=own); t_eval = cpu() - t
    S.Remaining.intersect = real
    full = S.Space.full(ifaces)
    flows_by = {}
    for f in fw_intent.flows: flows_by.setdefault(f.opening.index, []).append(f)
    t = cpu()
    ospaces = {i: F._union(full, [F.flow_space(full, f, F.CT_NEW) for f in fl]) for i, fl in flows_by.items()}
    intended = F._union(full, list(ospaces.values()))
    forwarded = F._union(full, [g.space for g in effective.forwarded])
    forwarded_new = forwarded.intersect(full.make(ct=F.CT_NEW | F.CT_NEW_DNAT))
    arriving_new = full.make(ct=F.CT_NEW).union(F._translated(full, effective))
    t_prep = cpu() - t
    print(f"evaluate (boxes) {t_eval:.2f} s; intent/forwarded spaces {t_prep:.2f} s; "
          f"{len(intended.boxes)} intended boxes, {len(forwarded.boxes)} forwarded boxes, {len(forwarded_new.boxes)} new; "
          f"{len(matches)} rule matches walked, {len(effective.forwarded)} grants")

    # --- now: per opening, as findings.audit does (missing and excess parts) ---
    t = cpu()
    fnf = forwarded_new.coalesced(); intf = intended.coalesced()
    miss_now = [i for i, sp in sorted(ospaces.items()) if sp.subtract(fnf) and sp.subtract(forwarded_new)]
    exc_now = [n for n, g in enumerate(effective.forwarded) if (a := g.space.intersect(arriving_new)).subtract(intf) and a.subtract(intended)]
    t_now = cpu() - t
    print(f"(now) per opening / per grant: {t_now:.2f} s CPU; missing at {len(miss_now)} openings, excess at {len(exc_now)} grants")

    # --- (a) boxes in bulk: one subtraction each way, attribute only what is left ---
    t = cpu()
    lost = intended.coalesced().subtract(fnf)
    if lost:
        lost = lost.subtract(forwarded_new)
    arriving = forwarded.intersect(arriving_new)
    extra = arriving.coalesced().subtract(intf)
    if extra:
        extra = extra.subtract(intended)
    miss_a = [i for i, sp in sorted(ospaces.items()) if lost and sp.intersect(lost)]
    exc_a = [n for n, g in enumerate(effective.forwarded) if extra and g.space.intersect(extra)]
    t_a = cpu() - t
    print(f"(a) bulk boxes: {t_a:.2f} s CPU; missing at {len(miss_a)}, excess at {len(exc_a)}; lost boxes {len(lost.boxes)}, extra boxes {len(extra.boxes)}")

    # --- (b) BDDs ---
    from dd import cudd
    t = cpu()
    bdd = cudd.BDD()
    bdd.configure(reordering=False)  # the declared order: interfaces, state, protocol, port, addresses
    nif = max(1, (len(ifaces.names) - 1).bit_length())
    widths = [("iif", nif), ("oif", nif), ("ct", 3), ("proto", 8), ("dport", 17), ("dst", 129), ("src", 129)]
    names = {}
    for dim, w in widths:
        names[dim] = [f"{dim}{k}" for k in range(w - 1, -1, -1)]  # MSB first
        bdd.declare(*names[dim])
    var = {dim: [bdd.var(n) for n in ns] for dim, ns in names.items()}
    TRUE, FALSE = bdd.true, bdd.false
    def eq(xs, v):
        node = TRUE
        for k, x in enumerate(reversed(xs)):
            node = (x & node) if v >> k & 1 else (~x & node)
        return node
    cache = {}
    width = dict(widths)
    def prefixes(lo, hi, w):
        # [lo, hi] as aligned blocks (CIDR-like prefixes): (value, prefix length)
        while lo <= hi:
            size = (lo & -lo) if lo else 1 << w
            while size > hi - lo + 1: size >>= 1
            yield lo, w - (size.bit_length() - 1)
            lo += size
    def iv(dim, ivs):
        key = (dim, ivs)
        got = cache.get(key)
        if got is None:
            ns = names[dim]; w = width[dim]; got = FALSE
            for lo, hi in ivs:
                for value, plen in prefixes(lo, hi, w):
                    got = got | bdd.cube({ns[k]: bool(value >> (w - 1 - k) & 1) for k in range(plen)})
            cache[key] = got
        return got
    def bits(dim, mask, nbits):
        key = (dim, mask)
        got = cache.get(key)
        if got is None:
            got = FALSE
            for k in range(nbits):
                if mask >> k & 1: got = got | eq(var[dim], k)
            cache[key] = got
        return got
    def box(b):
        return (bits("iif", b.iif, len(ifaces.names)) & bits("oif", b.oif, len(ifaces.names)) & bits("ct", b.ct, 8)
                & iv("proto", b.proto) & iv("dport", b.dport) & iv("dst", b.dst) & iv("src", b.src))
    def space(sp):
        u = FALSE
        for b in sp.boxes: u = u | box(b)
        return u
    # the walk: every match in the order the chains asked, per chain (Remaining object)
    t_walk = cpu()
    remaining = {}; hits = 0; accepted = FALSE; empty_hits = 0
    t_box = 0.0; done = 0
    for rid, m in matches:
        t0 = cpu(); mb = space(m); t_box += cpu() - t0
        rem = remaining.get(rid, TRUE)
        hit = rem & mb
        if hit == FALSE: empty_hits += 1
        remaining[rid] = rem & ~mb
        done += 1
        if done % 100 == 0:
            print(f"  walk: {done} matches, {cpu() - t_walk:.1f} s CPU ({t_box:.1f} s building match BDDs), nodes {len(bdd)}, remaining size {len(remaining[rid])}", flush=True)
        if cpu() - t_walk > float(sys.argv[3] if len(sys.argv) > 3 else 1e9):
            print(f"  walk stopped after {done} of {len(matches)} matches", flush=True); break
    t_walk = cpu() - t_walk
    print(f"(b) walk {t_walk:.1f} s CPU for {done} matches ({t_box:.1f} s building their BDDs from boxes)", flush=True)
    # the comparison, from the grants as evaluated (converted) and from the openings
    t_conv = cpu()
    fwd_b = space(forwarded); new_b = bits("ct", F.CT_NEW | F.CT_NEW_DNAT, 8)
    fwd_new_b = fwd_b & new_b
    op_b = {i: space(sp) for i, sp in ospaces.items()}
    intended_b = FALSE
    for u in op_b.values(): intended_b = intended_b | u
    arriving_b = space(arriving_new)
    grants_b = [space(g.space) for g in effective.forwarded]
    t_conv = cpu() - t_conv
    t_cmp = cpu()
    miss_b = [i for i in sorted(op_b) if (op_b[i] & ~fwd_new_b) != FALSE]
    exc_b = [n for n, g in enumerate(grants_b) if (g & arriving_b & ~intended_b) != FALSE]
    t_cmp = cpu() - t_cmp
    print(f"(b) BDD: walk of {len(matches)} matches {t_walk:.2f} s ({empty_hits} empty hits); boxes -> BDD of forwarded, openings, grants {t_conv:.2f} s; "
          f"comparison {t_cmp:.3f} s; missing at {len(miss_b)}, excess at {len(exc_b)}; BDD nodes {len(bdd)}; cache {len(cache)}")
    print(f"agree: missing now=a {miss_now == miss_a} now=b {miss_now == miss_b}; excess now=a {exc_now == exc_a} now=b {exc_now == exc_b}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB")

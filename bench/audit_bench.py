#!/usr/bin/env python3
"""The audit benchmark: `fwmatrix audit` of naive hand-written rulesets.

    .venv/bin/python bench/audit_bench.py [--sizes 1000,10000,100000] [--kinds nft,ipt,compiled]
                                          [--repeat 3] [--seed 1] [--no-profile] [--fresh]
    .venv/bin/python bench/audit_bench.py --phases MATRIX RULESET [--cprofile FILE]

For each size N (openings of a `bench/gen_matrix.py N --seed S` matrix, one
firewall `edge`) bench/naive_ruleset.py writes the ruleset an administrator
writes by hand from the table (one rule per opening, interface pair, family
and service, in matrix order, `ct state established,related accept` first,
policy drop, one DNAT rule per port forward), loads it into a fresh network
namespace and reads it back as the kernel holds it (cached under
/tmp/fwmatrix-bench-cache, with the load times). Kinds:

  nft       `nft -j list ruleset` of the naive nftables ruleset;
  ipt       `iptables-save` + `ip6tables-save` of the naive iptables rules;
  compiled  `nft -j list ruleset` of what `fwmatrix compile` writes for the
            same matrix (sets and maps), for comparison.

Measured, all in one run so that ratios compare like with like (each as a
whole process, started by bench/_spawn.py, peak RSS of that process only):

  - `fwmatrix audit MATRIX --firewall edge --ruleset FILE --format json -o OUT
    --fail-on high` (exit 1 is expected when findings reach high; the report
    must be written either way): wall, peak RSS, findings by kind; median of
    --repeat runs (one run from 100,000 openings up, or when a run takes
    longer than --slow seconds);
  - the baseline on the same file: `python -c "import json; json.load(open(F))"`
    for JSON, `open(F).read().splitlines()` for iptables-save;
  - fixed costs: `python -c pass`, `fwmatrix --version`.

Then the phases of the slowest naive nftables audit and of the slowest audit
overall, in one process (`--phases`: import, matrix and intent, read,
json.loads, IR parse, evaluate, compare, report), and under cProfile with
the top functions. Writes bench/results/audit.md and
prints it. Needs root (namespaces); nothing is loaded into the host's own
namespace. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402
import gen_matrix  # noqa: E402

CACHE_DIR = os.environ.get("FWMATRIX_BENCH_CACHE", "/tmp/fwmatrix-bench-cache")
FIREWALL = "edge"
KIND_LABEL = {"nft": "nftables, naive (`nft -j list ruleset`)", "ipt": "iptables, naive (`iptables-save` + `ip6tables-save`)",
              "compiled": "nftables, `fwmatrix compile` output (`nft -j list ruleset`)"}
# The targets: naive nftables ruleset, whole `fwmatrix audit` process.
TARGETS = {10_000: (3.0, 500.0), 100_000: (30.0, None)}  # openings -> (seconds, MB or None)
FINDING_KINDS = ("missing", "excess", "dmz-to-internet", "nat", "reply-blocked", "shadowed", "unmodelled")
MUST_BE_ZERO = ("missing", "excess", "nat", "reply-blocked", "unmodelled")


def python() -> str:
    return os.path.join(B.VENV_BIN, "python")


def fwmatrix() -> str:
    return os.path.join(B.VENV_BIN, "fwmatrix")


TIME = "/usr/bin/time"
CPU_MARK = "@@fwmbench-cpu"


def with_cpu(argv: list[str]) -> list[str]:
    """argv under GNU time, which prints the command's user and system CPU seconds last on
    stderr (and exits with its status). The peak RSS stays the command's: wait4 on time
    reports the largest of time's and its reaped child's."""
    return [TIME, "-f", f"{CPU_MARK} %U %S"] + argv if os.path.exists(TIME) else argv


def cpu(run: B.Run | None) -> float | None:
    """CPU seconds (user + system) of a run made through with_cpu, or None."""
    if run is None:
        return None
    for line in reversed(run.stderr.splitlines()):
        if line.startswith(CPU_MARK):
            user, system = line.split()[1:3]
            return float(user) + float(system)
    return None


def error_line(run: B.Run) -> str:
    if run.timed_out:
        return "timed out"
    lines = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith(CPU_MARK)
             and not line.startswith("Command exited with non-zero status")]
    return lines[-1][:200] if lines else f"exit status {run.returncode}"


def fmt_cpu(run: B.Run | None) -> str:
    value = cpu(run)
    return "–" if value is None else B.fmt_s(value)


def baseline_argv(kind: str, path: str) -> tuple[str, list[str]]:
    if kind == "ipt":
        return "read + splitlines", [python(), "-c", "import sys; open(sys.argv[1]).read().splitlines()", path]
    return "json.load", [python(), "-c", "import sys, json; json.load(open(sys.argv[1]))", path]


class Case:
    def __init__(self, n: int, kind: str):
        self.n, self.kind = n, kind
        self.matrix = ""
        self.prep: dict = {}
        self.ruleset = ""
        self.baseline_name = ""
        self.baseline: list[B.Run] = []
        self.audit: list[B.Run] = []
        self.counts: dict[str, int] | None = None
        self.examples: dict[str, list[dict]] = {}
        self.error = ""
        self.report: dict | None = None  # the last audit report
        self.before: "Case | None" = None  # the same audit with the older tree's code (--before)
        self.timed_out_after: float | None = None

    @property
    def audit_med(self) -> B.Run | None:
        ok = [r for r in self.audit if r.returncode in (0, 1) and not r.timed_out]
        return B.median_run(ok) if ok and self.counts is not None else None

    @property
    def baseline_med(self) -> B.Run | None:
        ok = [r for r in self.baseline if r.ok]
        return B.median_run(ok) if ok else None


# -- the measurements --------------------------------------------------------------


def matrix_for(n: int, seed: int, cache: str) -> str:
    path = os.path.join(cache, f"matrix-{n}-s{seed}-fw1.yaml")
    text = gen_matrix.generate(n, seed=seed, firewalls=1)
    current = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            current = handle.read()
    if current != text:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    return path


def prepare(matrix: str, kinds: list[str], cache: str, fresh: bool, timeout: float, single_timeout: float | None,
            kernel_listing: bool = False) -> dict:
    argv = [python(), os.path.join(B.BENCH_DIR, "naive_ruleset.py"), matrix, "--firewall", FIREWALL,
            "--kinds", ",".join(kinds), "--cache", cache, "--json", "--timeout", str(timeout)] + (["--fresh"] if fresh else [])
    if not kernel_listing:
        argv.append("--generated")
    if single_timeout is not None:
        argv += ["--single-timeout", str(single_timeout)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench/naive_ruleset.py failed ({proc.returncode})")
    return json.loads(proc.stdout)


def run_audit(case: Case, times: int, slow: float, timeout: float, workdir: str, tree: str | None = None) -> None:
    """`fwmatrix audit` of the case, `times` times; with `tree`, that checkout's code (bench/_at_tree.py)."""
    out = os.path.join(workdir, f"audit-{case.n}-{case.kind}{'-before' if tree else ''}.json")
    command = [python(), os.path.join(B.BENCH_DIR, "_at_tree.py"), tree] if tree else [fwmatrix()]
    argv = command + ["audit", case.matrix, "--firewall", FIREWALL, "--ruleset", case.ruleset,
            "--format", "json", "-o", out, "--fail-on", "high"]
    for i in range(times):
        if os.path.exists(out):
            os.unlink(out)
        run = B.measure(with_cpu(argv), timeout)
        case.audit.append(run)
        if run.timed_out or run.returncode not in (0, 1) or not os.path.exists(out):
            case.timed_out_after = timeout if run.timed_out else None
            case.error = f"over {timeout:.0f} s (stopped)" if run.timed_out else f"fwmatrix audit failed: {error_line(run)}"
            B.log(f"  {case.error}")
            case.counts = None
            return
        with open(out, encoding="utf-8") as handle:
            report = json.load(handle)
        case.report = report
        case.counts = report["counts"]
        case.examples = {}
        for finding in report["findings"]:
            examples = case.examples.setdefault(finding["kind"], [])
            if len(examples) < 3:
                examples.append(finding)
        B.log(f"  audit run {i + 1}: {run.wall:.2f} s wall, {fmt_cpu(run)} s CPU, {run.rss_mb:.0f} MB, exit {run.returncode}, "
              + ", ".join(f"{n} {k}" for k, n in case.counts.items() if n))
        if run.wall > slow:
            break


def profile(case: Case, cprofile_file: str, top: int) -> str:
    argv = [python(), os.path.abspath(__file__), "--phases", case.matrix, case.ruleset, "--cprofile", cprofile_file, "--top", str(top)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    plain = subprocess.run([python(), os.path.abspath(__file__), "--phases", case.matrix, case.ruleset], capture_output=True, text=True)
    return ("$ .venv/bin/python bench/audit_bench.py --phases MATRIX RULESET\n" + (plain.stdout or plain.stderr).rstrip()
            + "\n\n$ .venv/bin/python bench/audit_bench.py --phases MATRIX RULESET --cprofile FILE\n" + (proc.stdout or proc.stderr).rstrip())


# -- phases (in one process) ---------------------------------------------------------------


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def phases_main(matrix: str, ruleset_path: str, cprofile_file: str | None, top: int) -> int:
    """What `fwmatrix audit` runs, phase by phase, through the same functions."""
    import cProfile
    import io
    import pstats

    phases: list[tuple[str, float, float]] = []
    start = t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases.append((name, now - t, rss_mb()))
        t = now

    profiler = cProfile.Profile() if cprofile_file else None
    if profiler:
        profiler.enable()
    from fwmatrix.audit import findings as audit_module
    from fwmatrix import cli  # noqa: F401  (what the command imports)
    from fwmatrix.gcpause import gc_paused
    from fwmatrix.compile.intent import build_intent
    from fwmatrix.matrix.loader import load_matrix
    from fwmatrix.report.text import as_json
    from fwmatrix.targets import backend, detect
    mark("import")
    evaluated: list[float] = []
    real_evaluate = audit_module.evaluate

    def timed_evaluate(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            evaluated.append(time.perf_counter() - t0)

    audit_module.evaluate = timed_evaluate
    with gc_paused():  # as the command runs (fwmatrix/cli/common.py: user_errors)
        m = load_matrix(matrix)
        mark("load matrix")
        intent = build_intent(m)
        mark("intent")
        with open(ruleset_path, encoding="utf-8") as handle:
            text = handle.read()
        mark("read file")
        name = detect(text)
        if name == "nftables":
            data = json.loads(text)
            mark("json.loads")
            ruleset = backend("nftables").parse_json(data)
        else:
            text.splitlines()
            mark("splitlines")
            ruleset = backend(name).parse_save(text, source=ruleset_path)
        mark(f"parse to IR ({name})")
        report = audit_module.audit(intent, FIREWALL, ruleset, ruleset_path)
        now = time.perf_counter()
        ev = sum(evaluated)
        phases.append(("evaluate", ev, rss_mb()))
        phases.append(("compare (audit)", now - t - ev, rss_mb()))
        t = now
        out = as_json(report)
        mark("report JSON")
        with tempfile.NamedTemporaryFile("w", encoding="utf-8") as handle:
            handle.write(out)
        mark("write")
    if profiler:
        profiler.disable()
    total = time.perf_counter() - start
    rules = sum(len(c.rules) for tb in ruleset.tables for c in tb.chains)
    print(f"{os.path.basename(ruleset_path)}: {rules:,} rules in the IR; findings: "
          + ", ".join(f"{n} {k}" for k, n in report.counts().items() if n))
    print(f"{'phase':<22} {'seconds':>8} {'share':>6} {'peak RSS so far (MB)':>21}")
    for label, seconds, rss in phases:
        print(f"{label:<22} {seconds:8.3f} {seconds / total:6.0%} {rss:21.0f}")
    print(f"{'total':<22} {total:8.3f}  (in-process, garbage collector paused as in the command)"
          + ("  [under cProfile: everything is slower]" if profiler else ""))
    if profiler:
        profiler.dump_stats(cprofile_file)
        for key in ("cumulative", "tottime"):
            stream = io.StringIO()
            pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats(key).print_stats(top)
            text = stream.getvalue()
            print(f"\n--- top {top} by {key} ---")
            print(text[text.find("   ncalls"):].rstrip())
    return 0


# -- the report --------------------------------------------------------------------------


def _load_cell(meta: dict) -> str:
    if meta.get("generated"):
        return f"written directly, {B.fmt_s(meta['write_seconds'])} (no kernel: bench/naive_listing.py)"
    cell = f"{B.fmt_s(meta['load']['wall'])} + {B.fmt_s(meta['list']['wall'])}"
    notes = []
    if meta["load"].get("transactions", 1) > 1:
        single = meta.get("single_transaction", {})
        notes.append(f"in {meta['load']['transactions']} transactions"
                     + (f"; in one: over {single['timed_out_after']:.0f} s" if single.get("timed_out_after") else ""))
    if meta.get("variant") == "legacy":
        cell = "legacy " + cell
        other = meta.get("nft_variant") or {}
        if "load" in other:
            cell += f"; iptables-nft {B.fmt_s(other['load']['wall'])} + {B.fmt_s(other['list']['wall'])}" + \
                ("" if other.get("same_listing") else " (**its listing differs**)")
        elif other.get("timed_out"):
            cell += f"; iptables-nft: a step took over {other['timed_out_after']:.0f} s ({other['timed_out'].split(':')[0]})"
    if meta.get("cached"):
        notes.append(f"cached, {meta.get('date', '?')[:10]}")
    return cell + (f" ({'; '.join(notes)})" if notes else "")


KEPT = "<!-- kept by audit_bench.py: written by hand, not by this run -->"


def _kept(path: str) -> str:
    """What the file holds from the KEPT line on (measurements made by other tools, e.g.
    bench/space_directions.py, dated there): a run rewrites only its own part."""
    try:
        with open(path, encoding="utf-8") as handle:
            old = handle.read()
    except FileNotFoundError:
        return ""
    at = old.find(KEPT)
    return "\n" + old[at:] if at >= 0 else ""


def report(cases: list[Case], fixed: dict[str, B.Run], info: dict[str, str], args: argparse.Namespace, prof: str) -> str:
    lines = ["# fwmatrix audit benchmark", ""] + B.machine_lines(info) + [
        f"- matrices: `bench/gen_matrix.py N --seed {args.seed}` (one firewall, `edge`, seven interfaces); "
        "rulesets: `bench/naive_ruleset.py` (the naive hand-written form"
        + (", loaded into a fresh network namespace and read back)" if args.kernel_listing else
           ", its `nft -j list ruleset` and `iptables-save` listings written directly as the kernel lists them: "
           "bench/naive_listing.py, checked against real listings by `naive_ruleset.py --verify`; "
           "fwmatrix's compiled ruleset loaded and listed)"),
        f"- `fwmatrix audit MATRIX --firewall edge --ruleset FILE --format json -o OUT --fail-on high`, whole process; "
        f"medians of {args.repeat} runs (one run from 100,000 openings up, or when a run takes over {args.slow:.0f} s); "
        "the machine is shared and noisy: compare ratios within this run",
        "",
    ]
    e, s = fixed["python"], fixed["version"]
    lines += [f"Fixed costs in the same run (wall / CPU / peak RSS): `python -c pass` {B.fmt_s(e.wall)} s / {fmt_cpu(e)} s / "
              f"{B.fmt_mb(e.rss_mb)} MB; `fwmatrix --version` (interpreter and imports) {B.fmt_s(s.wall)} s / {fmt_cpu(s)} s / "
              f"{B.fmt_mb(s.rss_mb)} MB.", ""]
    for kind in args.kinds:
        kcases = [c for c in cases if c.kind == kind]
        if not kcases:
            continue
        lines += [f"## {KIND_LABEL[kind]}", ""]
        header = ["openings", "rules (kernel)", "file", "load + list (s)", "baseline: wall s / CPU s / MB",
                  "fwmatrix audit: wall s / CPU s / MB", "audit ÷ baseline: wall / CPU / memory", "runs", "findings"]
        rows = []
        for c in kcases:
            meta = c.prep
            b, a = c.baseline_med, c.audit_med
            base = f"{B.fmt_s(b.wall)} / {fmt_cpu(b)} / {B.fmt_mb(b.rss_mb)}" if b else "–"
            aud = f"**{B.fmt_s(a.wall)}** / {fmt_cpu(a)} / **{B.fmt_mb(a.rss_mb)}**" if a else (c.error or "–")
            cpu_ratio = f"{cpu(a) / cpu(b):.1f}×" if a and b and cpu(a) is not None and cpu(b) else "–"
            ratio = f"{a.wall / b.wall:.1f}× / {cpu_ratio} / {a.rss_mb / b.rss_mb:.1f}×" if a and b else "–"
            found = ", ".join(f"{n:,} {k}" for k, n in (c.counts or {}).items() if n) or ("none" if c.counts is not None else "–")
            rows.append([f"{c.n:,}", B.fmt_int(meta.get("rules")) if meta else "–",
                         f"{meta['bytes'] / 1e6:.1f} MB" if meta else "–", _load_cell(meta) if meta else "–",
                         f"{base} ({c.baseline_name})" if b else base, aud, ratio, str(len(c.audit)), found])
        lines += [B.md_table(header, rows), ""]
        ok = [c for c in kcases if c.audit_med is not None]
        if len(ok) > 1:
            growth = []
            for prev, cur in zip(ok, ok[1:]):
                growth.append(f"{prev.n:,} → {cur.n:,} openings: rules ×{cur.prep['rules'] / prev.prep['rules']:.1f}, "
                              f"audit wall ×{cur.audit_med.wall / prev.audit_med.wall:.1f}"
                              + (f" (CPU ×{cpu(cur.audit_med) / cpu(prev.audit_med):.1f})" if cpu(cur.audit_med) and cpu(prev.audit_med) else "")
                              + ", "
                              f"peak RSS ×{cur.audit_med.rss_mb / prev.audit_med.rss_mb:.1f}")
            lines += ["Growth: " + "; ".join(growth) + ".", ""]
    lines += [
        "Columns: **rules (kernel)** — rules the kernel holds after the load (nft: every chain; iptables: `-A` lines, "
        "IPv4 + IPv6: iptables-restore expands `-s a,b -d c,d` into one rule per source and destination); "
        "**CPU** — user + system seconds of the command (GNU time): less sensitive than wall time to the other work on "
        "this machine; "
        "**load + list** — `nft -f` in one transaction into a fresh namespace, then `nft -j list ruleset`; for iptables "
        "`iptables-restore` + `ip6tables-restore`, then `iptables-save` + `ip6tables-save`, of iptables-legacy (whose "
        "listing is audited) and of iptables-nft, the system's default (checked to list the same rules); seconds, "
        "measured when the listing was made (\"cached\": in an earlier run, same text); **baseline** — a bare `json.load` of the file (or read + "
        "`splitlines()` for iptables-save) as a whole process; **findings** — counts by kind in the audit report.",
        "",
    ]

    # sanity
    lines += ["## Sanity", ""]
    sane = []
    for c in cases:
        if c.counts is None:
            continue
        bad = {k: c.counts.get(k, 0) for k in MUST_BE_ZERO if c.counts.get(k, 0)}
        compiled = next((o for o in cases if o.n == c.n and o.kind == "compiled" and o.counts is not None), None)
        if bad:
            sane.append(f"- {c.n:,} {c.kind}: **unexpected findings** {bad}; first: "
                        + "; ".join(f"{k}: {f['message']} {f.get('rule', '')} {f.get('regions', [])[:2]}" for k in bad for f in c.examples.get(k, [])[:1]))
        elif compiled is not None and c is not compiled and c.counts.get("dmz-to-internet") != compiled.counts.get("dmz-to-internet"):
            sane.append(f"- {c.n:,} {c.kind}: dmz-to-internet differs from the compiled ruleset's "
                        f"({c.counts.get('dmz-to-internet')} vs {compiled.counts.get('dmz-to-internet')})")
        else:
            sane.append(f"- {c.n:,} {c.kind}: no missing, excess, nat, reply-blocked or unmodelled finding"
                        + (f"; {c.counts['shadowed']:,} shadowed" if c.counts.get("shadowed") else ""))
    lines += sane + ["", "A naive ruleset says exactly what the matrix says, so only `shadowed` may appear: a rule "
                     "whose every packet an earlier rule of the table already accepts (overlapping openings, "
                     "and for iptables the overlapping source/destination pairs of one expanded line).", ""]
    shadow = next((c for c in cases if c.examples.get("shadowed")), None)
    if shadow is not None:
        f = shadow.examples["shadowed"][0]
        lines += [f"Example ({shadow.n:,} {shadow.kind}): `{f.get('rule', '')}` — {f['message']}", ""]

    if prof:
        lines += ["## Where the time goes", "", "```", prof, "```", ""]

    if args.before:
        lines += before_after(cases, args)
    lines += goals(cases)
    lines += ["## Targets (from the issue: the naive nftables ruleset, whole `fwmatrix audit` process)", ""]
    for n, (secs, mb) in TARGETS.items():
        c = next((c for c in cases if c.n == n and c.kind == "nft"), None)
        if c is None or c.audit_med is None:
            lines.append(f"- {n:,} rules/openings: not measured in this run")
            continue
        a = c.audit_med
        ok_t = a.wall < secs
        text = (f"- {n:,} openings ({c.prep['rules']:,} rules): under {secs:.0f} s wall — {B.fmt_s(a.wall)} s "
                f"({fmt_cpu(a)} s CPU), " + ("met" if ok_t else "**missed**"))
        if mb is not None:
            text += f"; under {mb:.0f} MB peak — {B.fmt_mb(a.rss_mb)} MB, " + ("met" if a.rss_mb < mb else "**missed**")
        lines.append(text)
    for n, (secs, mb) in TARGETS.items():
        c = next((c for c in cases if c.n == n and c.kind == "ipt"), None)
        if c is None or c.audit_med is None:
            continue
        a = c.audit_med
        lines.append(f"- iptables-save, {n:,} openings ({c.prep['rules']:,} rules): {B.fmt_s(a.wall)} s ({fmt_cpu(a)} s CPU) / {B.fmt_mb(a.rss_mb)} MB "
                     f"(against the same limits: {'met' if a.wall < secs and (mb is None or a.rss_mb < mb) else '**missed**'})")
    lines.append("")
    return "\n".join(lines)


def _same(a: dict | None, b: dict | None) -> str:
    """The findings and their counts compared (a report may gain fields between commits)."""
    if a is None or b is None:
        return "–"
    same = (a["findings"], a["counts"]) == (b["findings"], b["counts"])
    return "findings identical" if same else "**findings differ**"


def before_after(cases: list[Case], args: argparse.Namespace) -> list[str]:
    """Each audit with the older tree's code and this one's, in the same run: CPU, memory, the reports compared."""
    rev = subprocess.run(["git", "-C", args.before, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [f"## Before and after (the same audits with the code of commit {rev or args.before}, bench/_at_tree.py, in this run)", ""]
    header = ["ruleset", "openings", "rules", "baseline CPU s", "before: CPU s / MB", "after: CPU s / MB",
              "after ÷ baseline (CPU)", "before ÷ after (CPU)", "reports"]
    rows = []
    for c in cases:
        b, a, base = c.before.audit_med if c.before else None, c.audit_med, c.baseline_med
        before_cell = (f"{fmt_cpu(b)} / {B.fmt_mb(b.rss_mb)}" if b else (c.before.error if c.before else "–"))
        rows.append([c.kind, f"{c.n:,}", B.fmt_int(c.prep.get("rules")) if c.prep else "–", fmt_cpu(base), before_cell,
                     f"{fmt_cpu(a)} / {B.fmt_mb(a.rss_mb)}" if a else (c.error or "–"),
                     f"{cpu(a) / cpu(base):.1f}×" if a and base and cpu(a) and cpu(base) else "–",
                     f"{cpu(b) / cpu(a):.1f}×" if a and b and cpu(a) and cpu(b) else "–",
                     _same(c.report, c.before.report if c.before else None)])
    return lines + [B.md_table(header, rows), "", "reports: the findings of the JSON audit reports of both, compared "
                    "whole (every finding, its message, regions and rule, in order) with their counts; the kinds are nft (naive nftables), ipt (naive iptables-save), compiled "
                    "(fwmatrix's own nftables output).", ""]


GOALS = {  # (kind, openings) -> (CPU seconds, times the baseline or None, MB)
    ("nft", 10_000): (3.0, 5.0, 500.0),
    ("compiled", 10_000): (3.0, None, 2048.0),
    ("compiled", 100_000): (30.0, None, 2048.0),
    ("nft", 100_000): (30.0, None, None),
}


def goals(cases: list[Case]) -> list[str]:
    """Issue 13's goals for the audit, in CPU seconds of the whole process."""
    lines = ["## Goals (issue 13: CPU seconds, whole `fwmatrix audit` process)", ""]
    for (kind, n), (seconds, times, mb) in GOALS.items():
        c = next((c for c in cases if c.kind == kind and c.n == n), None)
        if c is None or c.audit_med is None:
            lines.append(f"- {kind} {n:,}: not measured in this run" + (f" ({c.error})" if c is not None and c.error else ""))
            continue
        a, base = c.audit_med, c.baseline_med
        parts = [f"≤ {seconds:.0f} s CPU: {fmt_cpu(a)} s, " + ("met" if cpu(a) is not None and cpu(a) <= seconds else "**missed**")]
        if times is not None and base is not None and cpu(base):
            ratio = cpu(a) / cpu(base)
            parts.append(f"≤ {times:.0f} × json.load ({fmt_cpu(base)} s): {ratio:.1f}×, " + ("met" if ratio <= times else "**missed**"))
        if mb is not None:
            parts.append(f"≤ {mb:.0f} MB: {B.fmt_mb(a.rss_mb)} MB, " + ("met" if a.rss_mb <= mb else "**missed**"))
        lines.append(f"- {kind} {n:,} ({c.prep['rules']:,} rules): " + "; ".join(parts))
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fwmatrix audit benchmark (see bench/README.md)")
    parser.add_argument("--phases", nargs=2, metavar=("MATRIX", "RULESET"), help="only: the phases of one audit in this process")
    parser.add_argument("--cprofile", metavar="FILE", help="with --phases: run under cProfile, save the profile to FILE")
    parser.add_argument("--top", type=int, default=30, help="functions to list from the profile")
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated numbers of openings")
    parser.add_argument("--kinds", default="nft,ipt,compiled", help="comma-separated, of nft, ipt, compiled")
    parser.add_argument("--repeat", type=int, default=3, help="audit runs below 100,000 openings (median reported)")
    parser.add_argument("--slow", type=float, default=120.0, help="no repeats once a run takes longer than this (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    parser.add_argument("--cache", default=CACHE_DIR, help="matrices, naive rulesets and their listings")
    parser.add_argument("--fresh", action="store_true", help="load the rulesets again even when listings are cached")
    parser.add_argument("--single-timeout", type=float, help="seconds for a naive nft load in one transaction before "
                        "it is loaded in transactions of 10,000 rules (default: --timeout; see naive_ruleset.py)")
    parser.add_argument("--before", metavar="TREE", help="also run every audit with the code of TREE (a checkout of an "
                        "older commit, bench/_at_tree.py) and compare the reports")
    parser.add_argument("--before-timeout", type=float, default=600.0, help="seconds for each --before audit")
    parser.add_argument("--ipt-max", type=int, default=10_000, help="the largest size audited from iptables-save "
                        "(iptables-restore expands the naive rules about 8 times)")
    parser.add_argument("--kernel-listing", action="store_true", help="audit the naive rulesets as loaded into a namespace "
                        "and listed (hours at 100,000 openings), not as written directly by bench/naive_listing.py")
    parser.add_argument("--no-profile", action="store_true", help="skip the phases and cProfile of the slowest audit")
    parser.add_argument("--profile-case", metavar="KIND:N,...", help="profile these cases (e.g. nft:10000,ipt:1000) instead "
                        "of the slowest nft case and the slowest case")
    parser.add_argument("--profile-limit", type=float, default=900.0, help="profile the slowest case only if its audit "
                        "took at most this many seconds (else the slowest that did)")
    parser.add_argument("--output", default=os.path.join(B.RESULTS_DIR, "audit.md"), help="where to write the Markdown")
    args = parser.parse_args(argv)
    if args.phases:
        return phases_main(args.phases[0], args.phases[1], args.cprofile, args.top)

    args.kinds = [k for k in args.kinds.split(",") if k]
    why = B.kernel_available()
    if why is not None:
        B.log(f"error: the audit benchmark loads rulesets into namespaces: {why}")
        return 2
    for tool in (python(), fwmatrix()):
        if not os.path.exists(tool):
            B.log(f"error: {tool} is missing: run 'make venv' first")
            return 2
    os.makedirs(args.cache, exist_ok=True)
    info = B.machine()
    workdir = tempfile.mkdtemp(prefix="fwmatrix-audit-bench-")
    cases: list[Case] = []
    try:
        B.log("fixed costs: python -c pass, fwmatrix --version")
        fixed = {"python": B.median_run(B.repeat(with_cpu([python(), "-c", "pass"]), args.repeat)),
                 "version": B.median_run(B.repeat(with_cpu([fwmatrix(), "--version"]), args.repeat))}
        for n in (int(x) for x in args.sizes.split(",") if x):
            matrix = matrix_for(n, args.seed, args.cache)
            B.log(f"[{n:,}] {matrix}: preparing {', '.join(args.kinds)} (bench/naive_ruleset.py)")
            kinds = [k for k in args.kinds if not (k == "ipt" and n > args.ipt_max)]
            prep = prepare(matrix, kinds, args.cache, args.fresh, args.timeout, args.single_timeout, args.kernel_listing)
            for kind in args.kinds:
                if kind == "ipt" and n > args.ipt_max:
                    continue
                case = Case(n, kind)
                case.matrix, case.prep, case.ruleset = matrix, prep[kind], prep[kind]["ruleset"]
                cases.append(case)
                times = 1 if n >= 100_000 else args.repeat
                B.log(f"[{n:,} {kind}] {case.prep['rules']:,} rules: baseline x{times}")
                case.baseline_name, bargv = baseline_argv(kind, case.ruleset)
                case.baseline = B.repeat(with_cpu(bargv), times, args.timeout)
                B.log(f"[{n:,} {kind}] fwmatrix audit x{times}")
                run_audit(case, times, args.slow, args.timeout, workdir)
                if args.before:
                    case.before = Case(n, kind)
                    case.before.matrix, case.before.prep, case.before.ruleset = matrix, case.prep, case.ruleset
                    B.log(f"[{n:,} {kind}] fwmatrix audit x{times} from {args.before}")
                    run_audit(case.before, times, args.slow, args.before_timeout, workdir, args.before)
        prof = ""
        if not args.no_profile:
            targets: list[tuple[str, Case]] = []
            done = [c for c in cases if c.audit_med is not None]
            if args.profile_case:
                for spec in args.profile_case.split(","):
                    kind, _, n = spec.partition(":")
                    found = next((c for c in done if c.kind == kind and c.n == int(n)), None)
                    if found is not None:
                        targets.append((f"{found.n:,} openings, {found.kind}", found))
            elif done:
                nft = [c for c in done if c.kind == "nft"]
                if nft:
                    worst = max(nft, key=lambda c: c.audit_med.wall)
                    targets.append((f"The slowest naive nftables case, {worst.n:,} openings", worst))
                worst = max(done, key=lambda c: c.audit_med.wall)
                affordable = [c for c in done if c.audit_med.wall <= args.profile_limit]
                if worst.audit_med.wall > args.profile_limit and affordable:
                    skipped = worst
                    worst = max(affordable, key=lambda c: c.audit_med.wall)
                    title = (f"The slowest case, {skipped.n:,} openings, {skipped.kind}, took {skipped.audit_med.wall:.0f} s, "
                             f"more than --profile-limit; the slowest one below it, {worst.n:,} openings, {worst.kind}")
                else:
                    title = f"The slowest case, {worst.n:,} openings, {worst.kind}"
                if all(worst is not t for _, t in targets):
                    targets.append((title, worst))
            parts = []
            for title, target in targets:
                B.log(f"[{target.n:,} {target.kind}] phases and cProfile")
                parts.append(f"{title} ({target.prep['rules']:,} rules):\n\n"
                             + profile(target, os.path.join(args.cache, f"audit-{target.n}-{target.kind}.prof"), args.top))
            prof = "\n\n".join(parts)
        text = report(cases, fixed, info, args, prof)
        print(text)
        text += _kept(args.output)
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, args.output)
        B.log(f"wrote {args.output}")
    finally:
        for name in os.listdir(workdir):
            os.unlink(os.path.join(workdir, name))
        os.rmdir(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

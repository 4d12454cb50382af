"""The plan of an apply, made before anything changes: the request, the rendered and
validated ruleset, the live one read, the one after the apply predicted, both audited
against the matrix, and each management access judged on both (anti-lockout).
"""

from __future__ import annotations

import contextlib
import difflib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from fwmatrix.audit.evaluate import EvaluationError
from fwmatrix.audit.findings import AuditReport, Finding, audit
from fwmatrix.compile.intent import Intent, build_intent
from fwmatrix.compile.ruleset import compile_firewall
from fwmatrix.errors import FwmatrixError, did_you_mean
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import Management
from fwmatrix.ops import management  # management.check, looked up when called (tests replace it)
from fwmatrix.ops.apply.compiled import compiled_ruleset, read_compiled
from fwmatrix.ops.apply.drivers import DRIVERS, Own, Snapshot, own_tables
from fwmatrix.ops.apply.executors import Executor
from fwmatrix.ops.management import AccessVerdict

DEFAULT_KEEP = 10
Checkpoint = Callable[[str], None]  # called after each step of an apply; raising there fails that step (tests)


@dataclass(frozen=True)
class ApplyRequest:
    matrix: str
    firewall: str
    backend: str = "nftables"
    dry_run: bool = False
    confirm: float | None = None  # seconds until the automatic rollback
    force: bool = False  # apply even when management access would be cut or cannot be judged
    keep: int = DEFAULT_KEEP  # backups kept
    timer: str = "auto"  # auto, detached or systemd
    compiled: str | None = None  # a directory with the firewall's files from `fwmatrix compile --out-dir`, applied as they are


@dataclass
class Plan:
    firewall: str
    backend: str
    target: str
    files: dict[str, str]
    own: Own
    problems: list[str]  # what the target's own tool refused
    snapshot: Snapshot = field(default_factory=dict)
    before: AuditReport | None = None  # the live ruleset against the matrix
    after: AuditReport | None = None  # the predicted ruleset against the matrix
    own_before: str = ""
    own_after: str = ""
    access_before: list[AccessVerdict] = field(default_factory=list)
    access_after: list[AccessVerdict] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # management accesses that could not be judged, and why
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def diff(self) -> str:
        if self.own_before == self.own_after:
            return ""
        name = f"{self.firewall}.{self.backend}"
        return "".join(difflib.unified_diff(self.own_before.splitlines(keepends=True), self.own_after.splitlines(keepends=True),
                                            f"{name} (live)", f"{name} (after the apply)"))

    @property
    def fixed(self) -> list[Finding]:
        """Findings against the live ruleset that the predicted ruleset no longer has."""
        if self.before is None or self.after is None:
            return []
        left = {_finding_key(f) for f in self.after.findings}
        return [f for f in self.before.findings if _finding_key(f) not in left]

    @property
    def cuts(self) -> list[AccessVerdict]:
        return [v for v in self.access_after if not v.kept]

    def refusal(self, force: bool) -> str | None:
        """Why the plan must not be applied (None: it may)."""
        if self.problems:
            return f"the {self.backend} tools refuse the ruleset: " + "; ".join(self.problems[:5])
        if force:
            return None
        if self.cuts:
            return "the new ruleset would cut management access: " + "; ".join(str(v) for v in self.cuts) + " (--force applies it anyway)"
        if self.unjudged:
            return "management access cannot be judged: " + "; ".join(self.unjudged) + " (--force applies it anyway)"
        return None


def _finding_key(f: Finding) -> tuple:
    return (f.kind, f.opening.index if f.opening else None, f.message, f.rule)


def load_request(request: ApplyRequest) -> tuple[Intent, tuple[Management, ...], Ruleset]:
    intent = build_intent(load_matrix(request.matrix))
    if request.firewall not in intent.firewalls:
        raise FwmatrixError(f"no firewall named '{request.firewall}' in the matrix{did_you_mean(request.firewall, intent.firewalls)}; "
                            f"it has: {', '.join(intent.firewalls)}", request.matrix)
    if request.backend not in DRIVERS:
        raise FwmatrixError(f"unknown backend {request.backend!r}; choose one of {', '.join(DRIVERS)}")
    if request.compiled is not None:
        ruleset = compiled_ruleset(request.compiled, request.firewall, request.backend)
    else:
        ruleset = compile_firewall(intent, intent.firewalls[request.firewall])
    return intent, intent.matrix.firewalls[request.firewall].management, ruleset


JUDGING_ERRORS = (FwmatrixError, EvaluationError)  # a ruleset that cannot be read or judged
T = TypeVar("T")


def _or_note(notes: list[str], cannot: str, call: Callable[[], T]) -> T | None:
    """What `call` gives, or None with a note saying what cannot be done, and why."""
    try:
        return call()
    except JUDGING_ERRORS as exc:
        notes.append(f"{cannot}: {exc}")
        return None


def make_plan(request: ApplyRequest, intent: Intent, accesses: Sequence[Management], ruleset: Ruleset, ex: Executor,
              checkpoint: Checkpoint | None = None) -> Plan:
    """Validate, read the live ruleset, predict the one after the apply, and judge both."""
    driver = DRIVERS[request.backend]
    fw = request.firewall
    timer = StepTimer()
    with timer("render"):
        files = read_compiled(request.compiled, fw, request.backend) if request.compiled is not None else driver.render(ruleset)
    own = own_tables(ruleset)
    with timer("validate"):
        problems = driver.validate(ex, files)
    if checkpoint is not None:
        checkpoint("validated")
    plan = Plan(fw, request.backend, ex.target, files, own, problems, timings=timer.times)
    with timer("read"):
        plan.snapshot = driver.snapshot(ex)
    if problems:
        return plan
    with timer("plan"):
        # each judgement says what it can: one failing leaves the others
        live = _or_note(plan.notes, "the live ruleset cannot be read", lambda: driver.parse(plan.snapshot))
        if live is not None:
            plan.before = _or_note(plan.notes, "the live ruleset cannot be audited", lambda: audit(intent, fw, live, f"live ({ex.target})"))
            if accesses and driver.models_input:
                plan.access_before = _or_note(plan.notes, "management access on the live ruleset cannot be judged",
                                              lambda: management.check(live, intent.matrix, fw, accesses)) or []
        plan.own_before = driver.own_text(plan.snapshot, own)
        prediction = _or_note(plan.notes, "the ruleset after the apply cannot be predicted", lambda: driver.predict(plan.snapshot, files, ruleset, own))
        if prediction is None:
            plan.unjudged += [f"{a.label(fw)} (no prediction)" for a in accesses]
            return plan
        plan.own_after = prediction.own_text
        plan.after = _or_note(plan.notes, "the ruleset after the apply cannot be audited",
                              lambda: audit(intent, fw, prediction.ruleset, "after the apply (predicted)"))
        if accesses and driver.models_input:
            try:
                plan.access_after = management.check(prediction.ruleset, intent.matrix, fw, accesses)
            except JUDGING_ERRORS as exc:  # not a note: an access that cannot be judged refuses the apply
                plan.unjudged += [f"{a.label(fw)} ({exc})" for a in accesses]
        elif accesses:
            plan.unjudged += [f"{a.label(fw)} ({driver.name}: input rules are not modelled)" for a in accesses]
    return plan


class StepTimer:
    """Wall time of named steps, in seconds."""

    def __init__(self, times: dict[str, float] | None = None):
        self.times = times if times is not None else {}

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.times[step] = self.times.get(step, 0.0) + time.monotonic() - start

"""`fwmatrix apply --format json` and `confirm --format json`: the plan, what happened and
the armed rollback as data (schemas `fwmatrix.apply/1`, `fwmatrix.confirm/1`), for tools
such as the Ansible collection, which would otherwise read the text meant for people."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fwmatrix.ops.apply import ApplyResult, Plan
    from fwmatrix.ops.management import AccessVerdict

KEPT_FIELDS = ("armed", "backup", "seconds", "deadline", "timer", "unit", "pid", "token")  # of the armed rollback's record


def _access(verdict: AccessVerdict) -> dict:
    return {"access": verdict.label, "kept": verdict.kept, "lost": list(verdict.lost)}


def plan_json(plan: Plan) -> dict:
    """What the apply sees and predicts, before anything changes."""
    return {
        "firewall": plan.firewall,
        "backend": plan.backend,
        "target": plan.target,
        "refused": list(plan.problems),  # what the target's own tool refused
        "notes": list(plan.notes),
        "changes": bool(plan.diff),  # fwmatrix's own part of the ruleset changes
        "diff": plan.diff,
        "before": None if plan.before is None else plan.before.to_json(),
        "after": None if plan.after is None else plan.after.to_json(),
        "fixed": [f.to_json() for f in plan.fixed],
        "management": [_access(v) for v in plan.access_after],
        "unjudged": list(plan.unjudged),
    }


def rollback_json(pending: dict | None) -> dict | None:
    return None if pending is None else {key: pending[key] for key in KEPT_FIELDS if key in pending}


def apply_json(plan: Plan, result: ApplyResult | None, error: str | None) -> dict:
    """The plan, and what the apply did: `applied` false on a dry run or an `error`
    (the live ruleset is then what it was)."""
    out = {"schema": "fwmatrix.apply/1", **plan_json(plan), "dry_run": result is not None and not result.applied and error is None,
           "applied": result is not None and result.applied, "error": error}
    if result is not None:
        out |= {"backup": result.backup.name if result.backup is not None else None, "as_predicted": result.as_predicted,
                "management_live": [_access(v) for v in result.access_live], "rollback": rollback_json(result.pending)}
    out["timings"] = {name: round(seconds, 4) for name, seconds in plan.timings.items()}
    return out


def confirm_json(pending: dict | None, error: str | None, rolled_back: bool = False) -> dict:
    """`confirmed` with the rollback it cancelled, or why nothing was confirmed
    (`rolled_back`: the automatic rollback fired first)."""
    return {"schema": "fwmatrix.confirm/1", "confirmed": pending is not None, "rolled_back": rolled_back,
            "cancelled": rollback_json(pending), "error": error}

"""Severities of findings, in rising order, and the one test of a threshold.

A leaf: every report (audit, lint, CI formats) and the CLI's `--fail-on`
option share it, and importing it costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

SEVERITIES = ("info", "low", "medium", "high")


def reaches(level: str, threshold: str | None) -> bool:
    """Whether a finding of `level` is at least as severe as `threshold` (None: no threshold)."""
    return threshold is not None and SEVERITIES.index(level) >= SEVERITIES.index(threshold)


def any_reaches(levels: Iterable[str], threshold: str) -> bool:
    return any(reaches(level, threshold) for level in levels)

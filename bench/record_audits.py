"""A pytest plugin that records every audit report the tests make, to compare the
reports of two checkouts byte for byte (a speed change must not change one finding).

    PYTHONPATH=bench FWMATRIX_RECORD_AUDITS=DIR [FWMATRIX_TREE=TREE] \\
        .venv/bin/python -m pytest -p record_audits tests/test_audit.py ...
    .venv/bin/python bench/record_audits.py DIR_BEFORE DIR_AFTER     # compare

Each report of `fwmatrix.audit.findings.audit` called in the test process (not in
the subprocesses of CLI tests) is written as DIR/<test id>.<n>.json, its JSON with
sorted keys. With FWMATRIX_TREE the code under test is TREE's (bench/_at_tree.py),
the tests this checkout's: the same tests, two versions of the code.
"""

import json
import os
import re
import sys

_DIR = os.environ.get("FWMATRIX_RECORD_AUDITS")
_current = {"test": "", "n": 0}

if _DIR and "pytest" in sys.modules:
    if os.environ.get("FWMATRIX_TREE"):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _at_tree import _TreeFinder

        sys.meta_path.insert(0, _TreeFinder(os.path.abspath(os.environ["FWMATRIX_TREE"])))
    from fwmatrix.audit import findings as _findings

    _real_audit = _findings.audit

    def _recording_audit(*args, **kwargs):
        report = _real_audit(*args, **kwargs)
        _current["n"] += 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _current["test"])[-180:]
        os.makedirs(_DIR, exist_ok=True)
        with open(os.path.join(_DIR, f"{name}.{_current['n']}.json"), "w", encoding="utf-8") as handle:
            json.dump(report.to_json(), handle, sort_keys=True, indent=1, default=str)
        return report

    _findings.audit = _recording_audit  # before the test modules import it by name

    def pytest_runtest_setup(item):
        _current["test"], _current["n"] = item.nodeid, 0


_TMP = re.compile(r"pytest-of-[^/]+/pytest-[0-9]+/")  # each pytest run has its own temporary directory


def _text(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return _TMP.sub("pytest-N/", handle.read())


def compare(before: str, after: str) -> int:
    """Byte for byte, but for the runs' temporary directories in file names."""
    names = sorted(set(os.listdir(before)) | set(os.listdir(after)))
    differ = [n for n in names if (old := _text(os.path.join(before, n))) is None or old != _text(os.path.join(after, n))]
    print(f"{len(names)} recorded audit reports, {len(names) - len(differ)} byte-identical, {len(differ)} differ or exist on one side")
    for n in differ[:20]:
        print("  differs:", n)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(compare(sys.argv[1], sys.argv[2]))

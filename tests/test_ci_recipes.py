"""The CI recipes of examples/ci/ and .pre-commit-hooks.yaml, run as their CI would run them.

Each recipe is parsed, its `run:` / `script:` commands extracted and run in
order, with the same shell options, on a temporary git repository holding a
matrix with a base commit and a change (SIP over TLS on tcp/5062, RTP moved
to udp/20000-40000) and the firewall's saved live ruleset. What only CI can
do is replaced by stubs on PATH that write to files: `gh` and `curl` keep the
comment they would post, `pip` and `apt-get` record what they would install,
`sudo` runs its command; `uses:` steps (checkout, SARIF and artifact uploads)
are recorded with their inputs. The workflow files themselves are validated
against GitHub's and GitLab's published schemas (vendored by check-jsonschema).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SEED
from test_formats import CHANGED, JUNIT, SARIF

RECIPES = ROOT / "examples" / "ci"
GITHUB = RECIPES / "github" / "fwmatrix.yml"
GITLAB = RECIPES / "gitlab" / ".gitlab-ci.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
MATRIX = "matrices/contact-highway-7.yaml"
VENV_BIN = str(Path(sys.executable).parent)

STUBS = {
    "gh": 'while [ $# -gt 0 ]; do [ "$1" = --body-file ] && cp "$2" "$CAPTURE/comment.md"; shift; done',
    # a request without a body lists the notes: those in notes.json, if the test wrote it
    "curl": 'sent=; for a in "$@"; do case "$a" in body@*) cp "${a#body@}" "$CAPTURE/note.md"; sent=1;; esac; done; '
            '[ -n "$sent" ] || cat "$CAPTURE/notes.json" 2>/dev/null || echo "[]"',
    "sudo": 'exec "$@"',
    "pip": "true",
    "apt-get": "true",
}


@dataclass
class Repo:
    path: Path
    base: str  # the commit before the change
    capture: Path  # what the stubs wrote
    uses: list[tuple[str, dict]] = field(default_factory=list)  # `uses:` steps, with their inputs

    def calls(self, tool: str) -> list[str]:
        log = self.capture / f"{tool}.log"
        return log.read_text().splitlines() if log.exists() else []

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        stubs = self.capture / "bin"
        return {**os.environ, "PATH": f"{stubs}:{VENV_BIN}:{os.environ['PATH']}", "CAPTURE": str(self.capture), **extra}


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=ci", "-c", "user.email=ci@example.invalid", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    """The base commit (the seed matrix, and the live ruleset of a firewall that runs it)
    and the change on top, as a pull request's head."""
    path = tmp_path / "repo"
    (path / "matrices").mkdir(parents=True)
    (path / "live").mkdir()
    shutil.copy(SEED, path / MATRIX)
    shutil.copy(RECIPES / "live" / "edge.json", path / "live" / "edge.json")
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    git(path, "add", ".")
    git(path, "commit", "-qm", "base")
    base = git(path, "rev-parse", "HEAD")
    (path / MATRIX).write_text(CHANGED)
    git(path, "commit", "-qam", "SIP over TLS on tcp/5062; RTP on udp/20000-40000")
    capture = tmp_path / "capture"
    (capture / "bin").mkdir(parents=True)
    for tool, body in STUBS.items():
        stub = capture / "bin" / tool
        stub.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> "$CAPTURE/{tool}.log"\n{body}\n')
        stub.chmod(0o755)
    return Repo(path, base, capture)


def check_reports(repo: Repo) -> dict[str, str]:
    """Every report the recipe wrote, validated by its schema; name -> text."""
    reports = {}
    for report in sorted((repo.path / "reports").iterdir()):
        text = report.read_text()
        if report.name.endswith(".sarif"):
            SARIF.validate(json.loads(text))
        elif report.name.endswith(".junit.xml"):
            JUNIT.validate(text)
        else:
            pytest.fail(f"unexpected report {report.name}")
        reports[report.name] = text
    return reports


# -- GitHub Actions --------------------------------------------------------------------------


@dataclass
class Event:
    name: str  # 'pull_request', 'push', 'schedule'
    base: str = ""
    number: str = "42"


def github_expression(text: str, event: Event, repo: Repo, failed: bool) -> object:
    """The few expressions the workflow uses; any other fails the test (and wants adding here)."""
    values: dict[str, object] = {
        "github.event.pull_request.base.sha": event.base,
        "github.event.pull_request.number": event.number,
        "github.token": "stub-token",
        "github.ref": "refs/pull/42/merge",
        "github.event_name == 'pull_request'": event.name == "pull_request",
        "always()": True,
        "always() && hashFiles('reports/*.sarif') != ''": bool(glob.glob(str(repo.path / "reports" / "*.sarif"))),
        "success()": not failed,
    }
    key = text.strip()
    if key.startswith("${{") and key.endswith("}}"):
        key = key[3:-2].strip()
    if key not in values:
        pytest.fail(f"the test does not know the workflow expression {text!r}")
    return values[key]


def substituted(value: object, event: Event, repo: Repo) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(github_expression(m.group(1), event, repo, False)), str(value))


@dataclass
class Step:
    name: str
    ran: bool
    code: int = 0
    out: str = ""


def run_github(repo: Repo, event: Event) -> tuple[bool, list[Step]]:
    """Run the workflow's job as Actions would on `event`: (whether the job failed, the steps)."""
    workflow = yaml.safe_load(GITHUB.read_text())
    (job,) = workflow["jobs"].values()
    env = {k: substituted(v, event, repo) for k, v in {**workflow.get("env", {}), **job.get("env", {})}.items()}
    env["GITHUB_STEP_SUMMARY"] = str(repo.capture / "summary.md")
    failed = False
    steps = []
    for step in job["steps"]:
        name = step.get("name", step.get("uses", ""))
        condition = step.get("if", "success()")
        # as Actions does: without a status function, a condition also needs success()
        implied_success = not re.search(r"\b(success|failure|always|cancelled)\(\)", condition)
        if (implied_success and failed) or not github_expression(condition, event, repo, failed):
            steps.append(Step(name, False))
            continue
        if "uses" in step:
            repo.uses.append((step["uses"], {k: substituted(v, event, repo) for k, v in step.get("with", {}).items()}))
            steps.append(Step(name, True))
            continue
        step_env = {**env, **{k: substituted(v, event, repo) for k, v in step.get("env", {}).items()}}
        assert "${{" not in step["run"], f"step {name!r}: expressions in run: go through env (script injection)"
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                              cwd=repo.path, env=repo.env(step_env), capture_output=True, text=True)
        steps.append(Step(name, True, proc.returncode, proc.stdout + proc.stderr))
        tolerated = github_expression(str(step.get("continue-on-error", False)), event, repo, failed) if "continue-on-error" in step else False
        if proc.returncode != 0 and tolerated is not True:
            failed = True
    return failed, steps


def by_name(steps: list[Step]) -> dict[str, Step]:
    return {s.name: s for s in steps}


def test_github_workflow_follows_githubs_schema() -> None:
    validate_with_vendored_schema("vendor.github-workflows", GITHUB)


def test_github_pull_request(repo: Repo) -> None:
    failed, steps = run_github(repo, Event("pull_request", base=repo.base))
    named = by_name(steps)
    assert not failed, [(s.name, s.code, s.out[-2000:]) for s in steps if s.code]
    # installed what it runs
    assert any("install" in call and "fwmatrix" in call for call in repo.calls("pip"))
    assert any("nftables" in call for call in repo.calls("apt-get"))
    # check, lint, compile passed; the rulesets of every backend are there
    for step in ("Lint (annotations in code scanning)", "Lint", "Compile for every backend"):
        assert named[step].code == 0, named[step].out
    assert "matrix 'contact-highway-7' is valid" in named["Check (nft -c, iptables-restore --test and the pf checker, in a private network namespace)"].out
    assert sorted(os.listdir(repo.path / "out")) == ["edge.ipt4", "edge.ipt6", "edge.nft", "edge.pf.conf"]
    # the comment posted is the review of the change against the base
    comment = (repo.capture / "comment.md").read_text()
    assert comment.startswith("### 🔀 fwmatrix review: opens 3 flows, closes 2, changes 3 NAT on firewall edge")
    assert "➕ `wan0 → dmz0  0.0.0.0/0 → 172.16.10.21  tcp/5062  after DNAT`" in comment
    assert "```mermaid\n" in comment  # --diagram: the openings the change adds or changes, drawn
    assert comment == (repo.capture / "summary.md").read_text()
    (call,) = repo.calls("gh")
    assert shlex.split(call)[:3] == ["pr", "comment", "42"] and "--edit-last" in call
    # the live ruleset runs the base: the audit of the change says what deploying it takes,
    # without failing the pull request (continue-on-error)
    assert named["Audit the saved live rulesets"].code == 1
    reports = check_reports(repo)
    assert set(reports) == {"lint.sarif", "audit-edge.sarif"}
    results = json.loads(reports["audit-edge.sarif"])["runs"][0]["results"]
    missing = {r["properties"]["case"]: r["message"]["text"] for r in results if r["ruleId"] == "missing"}
    assert set(missing) == {"operator-sip", "operator-rtp", "msa-to-rtpproxy"} and "tcp/5062" in missing["operator-sip"]
    # uploads
    uploads = dict(repo.uses)
    assert uploads["github/codeql-action/upload-sarif@v3"] == {"sarif_file": "reports"}
    assert "actions/upload-artifact@v4" in uploads and "actions/checkout@v4" in uploads


def test_github_push_of_a_firewall_in_sync_is_green(repo: Repo) -> None:
    git(repo.path, "checkout", "-q", repo.base)  # main as the live ruleset runs it
    failed, steps = run_github(repo, Event("push"))
    assert not failed, [(s.name, s.code, s.out[-2000:]) for s in steps if s.code]
    named = by_name(steps)
    assert not named["Review the change"].ran and not named["Post the review as a pull request comment"].ran
    assert "firewall 'edge' matches the matrix" in named["Audit the saved live rulesets"].out
    assert json.loads(check_reports(repo)["audit-edge.sarif"])["runs"][0]["results"] == []
    assert repo.calls("gh") == []


def test_github_push_of_a_drifted_firewall_fails_and_still_uploads(repo: Repo) -> None:
    git(repo.path, "checkout", "-q", repo.base)
    shutil.copy(ROOT / "examples" / "drift" / "edge.json", repo.path / "live" / "edge.json")
    failed, steps = run_github(repo, Event("push"))
    assert failed
    named = by_name(steps)
    assert named["Audit the saved live rulesets"].code == 1
    assert named["Upload to code scanning"].ran and named["Keep the rulesets and reports"].ran
    kinds = {r["ruleId"] for r in json.loads(check_reports(repo)["audit-edge.sarif"])["runs"][0]["results"]}
    assert {"missing", "excess", "nat", "dmz-to-internet", "reply-blocked", "shadowed", "unmodelled"} <= kinds


def test_github_a_broken_matrix_stops_the_job(repo: Repo) -> None:
    (repo.path / MATRIX).write_text(CHANGED.replace("tcp/5062", "tcp/70000"))
    failed, steps = run_github(repo, Event("pull_request", base=repo.base))
    assert failed
    first = next(s for s in steps if s.code)
    # `|| [ $? -eq 1 ]` lets findings through, not an input error (exit 2)
    assert first.name == "Lint (annotations in code scanning)"
    assert "error: matrices/contact-highway-7.yaml:45: bad service 'tcp/70000'" in first.out
    assert not by_name(steps)["Post the review as a pull request comment"].ran


# -- GitLab CI --------------------------------------------------------------------------------


def gitlab_jobs() -> tuple[list[str], dict[str, dict]]:
    """Stages, and the jobs with `extends` resolved (GitLab merges hashes, replaces lists)."""
    config = yaml.safe_load(GITLAB.read_text())

    def resolved(job: dict) -> dict:
        if "extends" not in job:
            return job
        parent = resolved(config[job["extends"]])
        merged = dict(parent)
        for key, value in job.items():
            if key == "extends":
                continue
            merged[key] = {**parent[key], **value} if isinstance(value, dict) and isinstance(parent.get(key), dict) else value
        return merged

    jobs = {name: resolved(job) for name, job in config.items() if isinstance(job, dict) and "script" in job and not name.startswith(".")}
    return config["stages"], jobs


def gitlab_condition(condition: str, variables: dict[str, str]) -> bool:
    """`$A == "text"` or `$A == $B`: all the recipe's rules use."""
    match = re.fullmatch(r'\$(\w+) == (?:"([^"]*)"|\$(\w+))', condition.strip())
    if match is None:
        pytest.fail(f"the test does not know the rule {condition!r}")
    left = variables.get(match.group(1), "")
    right = match.group(2) if match.group(2) is not None else variables.get(match.group(3), "")
    return left == right


def run_gitlab(repo: Repo, variables: dict[str, str]) -> dict[str, tuple[int, bool, str]]:
    """Run the pipeline: job name -> (exit code, allowed to fail, output), in stage order;
    a job that fails (and may not) stops the later stages."""
    stages, jobs = gitlab_jobs()
    results: dict[str, tuple[int, bool, str]] = {}
    for stage in stages:
        if any(code and not allowed for code, allowed, _ in results.values()):
            break
        for name, job in jobs.items():
            if job["stage"] != stage:
                continue
            rule = next((r for r in job["rules"] if gitlab_condition(r["if"], variables)), None)
            if rule is None:
                continue
            env = {**job.get("variables", {}), **variables}
            script = "\n".join(job.get("before_script", []) + job["script"])
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                                  cwd=repo.path, env=repo.env(env), capture_output=True, text=True)
            results[name] = (proc.returncode, bool(rule.get("allow_failure", False)), proc.stdout + proc.stderr)
    return results


def merge_request(repo: Repo) -> dict[str, str]:
    return {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "CI_MERGE_REQUEST_DIFF_BASE_SHA": repo.base,
        "CI_MERGE_REQUEST_IID": "7",
        "CI_PROJECT_ID": "1234",
        "CI_API_V4_URL": "https://gitlab.example.invalid/api/v4",
        "CI_DEFAULT_BRANCH": "main",
        "FWMATRIX_NOTE_TOKEN": "stub-token",
    }


def test_gitlab_ci_follows_gitlabs_schema() -> None:
    validate_with_vendored_schema("vendor.gitlab-ci", GITLAB)


def test_gitlab_merge_request(repo: Repo) -> None:
    results = run_gitlab(repo, merge_request(repo))
    assert list(results) == ["fwmatrix-validate", "fwmatrix-review", "fwmatrix-audit"]
    assert results["fwmatrix-validate"][0] == 0, results["fwmatrix-validate"][2][-3000:]
    assert results["fwmatrix-review"][0] == 0, results["fwmatrix-review"][2][-3000:]
    assert results["fwmatrix-audit"][:2] == (1, True)  # the live ruleset lags the change: allowed to fail
    note = (repo.capture / "note.md").read_text()
    assert note.startswith("### 🔀 fwmatrix review: opens 3 flows, closes 2, changes 3 NAT on firewall edge")
    assert "```mermaid\n" in note
    listed, posted = repo.calls("curl")
    assert "PRIVATE-TOKEN: stub-token" in listed and "/projects/1234/merge_requests/7/notes?sort=desc" in listed
    assert "--request POST" in posted and "PRIVATE-TOKEN: stub-token" in posted and posted.endswith("/projects/1234/merge_requests/7/notes")
    reports = check_reports(repo)
    assert set(reports) == {"check.junit.xml", "lint.junit.xml", "audit-edge.junit.xml"}
    _, jobs = gitlab_jobs()
    assert all(jobs[name]["artifacts"]["reports"]["junit"] == "reports/*.junit.xml" for name in ("fwmatrix-validate", "fwmatrix-audit"))
    assert sorted(os.listdir(repo.path / "out")) == ["edge.ipt4", "edge.ipt6", "edge.nft", "edge.pf.conf"]
    assert 'failure type="missing"' in reports["audit-edge.junit.xml"]


def test_gitlab_updates_its_note_on_the_next_push(repo: Repo) -> None:
    """The merge request keeps one review note: a later pipeline edits it instead of adding one."""
    (repo.capture / "notes.json").write_text(json.dumps([
        {"id": 31, "body": "looks good to me"},
        {"id": 30, "body": "### 🔀 fwmatrix review: opens 1 flow on firewall edge\n..."},
    ]))
    results = run_gitlab(repo, merge_request(repo))
    assert results["fwmatrix-review"][0] == 0, results["fwmatrix-review"][2][-3000:]
    _, updated = repo.calls("curl")
    assert "--request PUT" in updated and updated.endswith("/projects/1234/merge_requests/7/notes/30")


def test_gitlab_default_branch_in_sync_is_green_and_posts_nothing(repo: Repo) -> None:
    git(repo.path, "checkout", "-q", repo.base)
    results = run_gitlab(repo, {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"})
    assert {name: code for name, (code, _, _) in results.items()} == {"fwmatrix-validate": 0, "fwmatrix-audit": 0}
    assert repo.calls("curl") == []


def test_gitlab_drift_on_the_default_branch_fails(repo: Repo) -> None:
    git(repo.path, "checkout", "-q", repo.base)
    shutil.copy(ROOT / "examples" / "drift" / "edge.json", repo.path / "live" / "edge.json")
    results = run_gitlab(repo, {"CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main", "CI_DEFAULT_BRANCH": "main"})
    assert results["fwmatrix-audit"][:2] == (1, False)
    assert 'failure type="excess"' in check_reports(repo)["audit-edge.junit.xml"]


# -- pre-commit hooks --------------------------------------------------------------------------


def run_hooks(repo: Repo) -> dict[str, subprocess.CompletedProcess[str]]:
    """Each hook as pre-commit runs it: its entry, then every file its pattern matches."""
    out = {}
    for hook in yaml.safe_load(HOOKS.read_text()):
        assert hook["language"] == "python"
        files = [f for f in git(repo.path, "ls-files").splitlines() if re.search(hook["files"], f)]
        out[hook["id"]] = subprocess.run([*shlex.split(hook["entry"]), *hook.get("args", []), *files],
                                         cwd=repo.path, env=repo.env({}), capture_output=True, text=True)
    return out


def test_pre_commit_hooks(repo: Repo) -> None:
    shutil.copy(ROOT / "examples" / "two-firewalls" / "matrix.yaml", repo.path / "matrices" / "two-firewalls.yaml")
    (repo.path / "matrices" / "notes.txt").write_text("not a matrix")
    git(repo.path, "add", ".")
    results = run_hooks(repo)
    assert set(results) == {"fwmatrix-check", "fwmatrix-lint"}
    check, lint = results["fwmatrix-check"], results["fwmatrix-lint"]
    assert check.returncode == 0, check.stderr
    assert "'contact-highway-7' is valid" in check.stdout and "'two-firewalls' is valid" in check.stdout
    assert lint.returncode == 1 and "app-to-db" in lint.stdout  # two-firewalls: an opening inside the LAN
    (repo.path / MATRIX).write_text(CHANGED.replace("to: bal", "to: bla"))
    broken = run_hooks(repo)
    for result in broken.values():
        assert result.returncode == 2 and result.stderr.startswith("error: matrices/contact-highway-7.yaml:82: unknown name 'bla'")


# -- the version the recipes pin ----------------------------------------------------------------

# a pinned fwmatrix: a tagged git URL (...@v0.2.0), a pre-commit `rev:`, a requirement (fwmatrix==0.2.0)
PIN = re.compile(r"(?:@v|\brev:\s*v?|\bfwmatrix\s*(?:==|~=|>=|<=)\s*)(\d+\.\d+\.\d+[\w.+-]*)")
PINNING = [HOOKS, GITHUB, GITLAB, RECIPES / "README.md", ROOT / "README.md", ROOT / "ansible" / "fwmatrix" / "fwmatrix" / "README.md",
           *sorted((ROOT / "docs").glob("*.md"))]


def test_recipes_pin_the_version_fwmatrix_is() -> None:
    """Every recipe, the hook's example and the docs pin fwmatrix.__version__ (what `fwmatrix --version`
    says and the tag v<version> names), never a version that does not exist."""
    from fwmatrix import __version__

    pins = {(path.relative_to(ROOT).as_posix(), version) for path in PINNING for version in PIN.findall(path.read_text(encoding="utf-8"))}
    assert {path for path, _ in pins} >= {".pre-commit-hooks.yaml", "examples/ci/github/fwmatrix.yml", "examples/ci/gitlab/.gitlab-ci.yml",
                                          "examples/ci/README.md"}  # the pins are still found where they are
    assert sorted(pin for pin in pins if pin[1] != __version__) == []


def test_the_pin_check_sees_another_version() -> None:
    text = ('rev: v0.0.9\n  rev: 1.2.3\nFWMATRIX_SPEC: "fwmatrix @ git+https://git.example.com/netops/fwmatrix@v0.2.0"\n'
            "pip install fwmatrix==3.0.0rc1; uses: actions/checkout@v4")
    assert PIN.findall(text) == ["0.0.9", "1.2.3", "0.2.0", "3.0.0rc1"]


# -- schemas of the CI systems ------------------------------------------------------------------


def validate_with_vendored_schema(name: str, path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", name, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache License 2.0 (see the LICENSE file of fwmatrix)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fwmatrix_ruleset
short_description: Apply, confirm or audit the ruleset fwmatrix compiles for a firewall
version_added: "0.1.0"
description:
  - Runs on the firewall itself and calls the C(fwmatrix) command there.
  - With O(state=applied) and O(controller_matrix), the firewall's ruleset is compiled on the
    controller (an action plugin runs the controller's C(fwmatrix compile), one file per firewall,
    or for iptables its C(.ipt4), C(.ipt6) and C(.ipset)) and sent to the host, which applies
    exactly those files (C(fwmatrix apply --compiled)). Without it the firewall compiles O(matrix) itself.
  - With O(state=applied) the ruleset is loaded with
    C(fwmatrix apply), which validates it, refuses one that would cut the management access the
    matrix declares, backs up the live ruleset and loads the new one atomically. With O(confirm)
    (the default) the previous ruleset comes back by itself unless the ruleset is confirmed in
    time (O(state=confirmed)), also when the connection to the firewall is lost.
  - In check mode nothing is touched. The module reports the audit of the live ruleset against
    the matrix and whether an apply would change fwmatrix's part of the ruleset
    (C(fwmatrix apply --dry-run --format json)); with C(--diff) it shows that change as a unified diff.
  - With O(state=audited) it returns the audit of the live ruleset (C(fwmatrix audit --live
    --format json)) as structured data and never reports a change.
  - With O(state=confirmed) it keeps the ruleset applied with O(confirm) (C(fwmatrix confirm)).
    Nothing armed to confirm is not a change; a rollback that already fired is a failure.
author:
  - fwmatrix contributors
options:
  state:
    description:
      - V(applied) applies the matrix's ruleset for O(firewall), V(confirmed) confirms the last
        apply, V(audited) audits the live ruleset against the matrix.
    type: str
    choices: [applied, confirmed, audited]
    default: applied
  matrix:
    description:
      - Path of the matrix (YAML) on the firewall host. Copy it there first (M(ansible.builtin.copy)).
      - Required with O(state=applied) and O(state=audited). The firewall judges the ruleset against it
        (the audits, the management accesses), also one compiled on the controller.
    type: path
  controller_matrix:
    description:
      - The matrix on the controller. With O(state=applied), the action plugin compiles O(firewall)'s ruleset
        from it on the controller and the host applies those files. It should be the matrix copied to O(matrix).
      - Relative paths are looked up as M(ansible.builtin.copy) looks up O(ansible.builtin.copy#module:src).
    type: path
  controller_fwmatrix:
    description:
      - The C(fwmatrix) command on the controller, for O(controller_matrix).
    type: str
    default: fwmatrix
  compiled:
    description:
      - A directory on the firewall host holding the files C(fwmatrix compile -o) wrote for O(firewall), applied as
        they are. The action plugin sets it from O(controller_matrix); give it only for files already on the host.
    type: path
  firewall:
    description:
      - The firewall of the matrix this host is (its name under C(firewalls:)).
      - Required with O(state=applied) and O(state=audited).
    type: str
  backend:
    description:
      - The firewall's ruleset language.
    type: str
    choices: [nftables, iptables]
    default: nftables
  confirm:
    description:
      - Seconds within which O(state=confirmed) must run, or the previous ruleset is restored
        by itself. V(0) applies without an automatic rollback.
    type: int
    default: 120
  timer:
    description:
      - What waits to roll back (C(fwmatrix apply --timer)). V(detached) is a process of its own;
        V(auto) uses systemd where it runs.
    type: str
    choices: [auto, detached, systemd]
    default: auto
  force:
    description:
      - Apply even when a management access the matrix declares would be cut or cannot be judged.
    type: bool
    default: false
  fwmatrix:
    description:
      - The C(fwmatrix) command on the firewall host (a name on its PATH, or a path, such as a
        virtual environment's C(bin/fwmatrix)).
    type: str
    default: fwmatrix
  netns:
    description:
      - Act inside this network namespace of the host instead of the host itself (labs, tests).
    type: str
  state_dir:
    description:
      - fwmatrix's state directory (backups, the lock, the armed rollback); fwmatrix's default
        (C(/var/lib/fwmatrix)) when not given.
    type: path
notes:
  - Needs root on the firewall (C(become)).
  - Check mode is supported for every state; the diff mode for O(state=applied).
  - An apply always arms the rollback with O(confirm), also when the ruleset does not change,
    so that O(state=confirmed) has the same meaning on every host of a play.
requirements:
  - fwmatrix on the firewall host, and the firewall's tools (C(nft), or C(iptables-restore) and C(ipset)).
"""

EXAMPLES = r"""
- name: Put the matrix on the firewall
  ansible.builtin.copy:
    src: matrices/site.yaml
    dest: /etc/fwmatrix/site.yaml
    mode: "0644"

- name: What would change (run the play with --check --diff)
  fwmatrix.fwmatrix.fwmatrix_ruleset:
    matrix: /etc/fwmatrix/site.yaml
    controller_matrix: matrices/site.yaml
    firewall: "{{ inventory_hostname }}"

- name: Apply what the controller compiled, rolled back by itself unless confirmed within 60 s
  fwmatrix.fwmatrix.fwmatrix_ruleset:
    matrix: /etc/fwmatrix/site.yaml
    controller_matrix: matrices/site.yaml
    firewall: "{{ inventory_hostname }}"
    confirm: 60

- name: The firewall still answers from the controller
  ansible.builtin.wait_for:
    host: "{{ ansible_host }}"
    port: 22
    search_regex: OpenSSH
    timeout: 10
  delegate_to: localhost

- name: Keep it
  fwmatrix.fwmatrix.fwmatrix_ruleset:
    state: confirmed

- name: The live ruleset against the matrix, as data
  fwmatrix.fwmatrix.fwmatrix_ruleset:
    state: audited
    matrix: /etc/fwmatrix/site.yaml
    firewall: "{{ inventory_hostname }}"
  register: audit
"""

RETURN = r"""
audit:
  description:
    - The audit of the live ruleset against the matrix (schema C(fwmatrix.audit/1)), before any change.
    - Returned with O(state=audited), and with O(state=applied) in check mode.
  returned: when state is audited, or applied in check mode
  type: dict
  sample:
    schema: fwmatrix.audit/1
    firewall: internal
    verdict: "firewall 'internal' differs from the matrix: 1 excess"
    counts: {excess: 1, missing: 0}
    findings:
      - kind: excess
        severity: high
        message: forwarded, but no opening asks for it (granted by inet fwmatrix fwd_lan0_to_outside0 handle 17)
        rule: inet fwmatrix fwd_lan0_to_outside0 handle 17
clean:
  description: Whether the audit found nothing.
  returned: when O(state=audited), or applied in check mode
  type: bool
ruleset_diff:
  description: The unified diff of fwmatrix's own part of the ruleset, live against after the apply; empty when it does not change.
  returned: when state is applied
  type: str
rollback:
  description:
    - The armed rollback (C(fwmatrix apply --format json)'s C(rollback)) - C(deadline) (seconds since the epoch),
      C(seconds), C(backup) it restores, C(timer) and its C(pid) or systemd C(unit); null when nothing is armed.
  returned: when state is applied
  type: dict
report:
  description:
    - Everything C(fwmatrix apply --format json) reports (schema C(fwmatrix.apply/1), docs/apply.md) - the plan
      (audits before and after, findings fixed, management accesses kept or cut), what was done, the step timings.
    - Also returned, when the apply is refused or fails, with the failure.
  returned: when state is applied
  type: dict
confirm:
  description: What C(fwmatrix confirm --format json) reports (schema C(fwmatrix.confirm/1)) - C(confirmed), C(cancelled).
  returned: when state is confirmed, not in check mode
  type: dict
compiled_files:
  description: The files compiled on the controller and applied (with O(controller_matrix)).
  returned: when state is applied with controller_matrix
  type: list
  elements: str
stdout:
  description: What C(fwmatrix audit) printed.
  returned: when state is audited
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule


class Firewall(object):
    """The fwmatrix command on this host, in the module's namespace and state directory."""

    def __init__(self, module):
        self.module = module
        self.params = module.params

    def run(self, args, in_netns=False):
        argv = [self.params["fwmatrix"]] + args
        if in_netns and self.params["netns"]:  # a command without --netns of its own
            argv = ["ip", "netns", "exec", self.params["netns"]] + argv
        rc, out, err = self.module.run_command(argv, environ_update={"COLUMNS": "200", "NO_COLOR": "1"})
        return rc, out, err, argv

    def fail(self, what, rc, out, err, argv):
        last = ((err or out).strip().splitlines() or [""])[-1]
        self.module.fail_json(msg="%s failed (exit %d): %s" % (what, rc, last),
                              rc=rc, stdout=out, stderr=err, cmd=argv)

    def common(self, netns=True):
        args = []
        if self.params["state_dir"]:
            args += ["--state-dir", self.params["state_dir"]]
        if netns and self.params["netns"]:
            args += ["--netns", self.params["netns"]]
        return args

    def target(self):
        for name in ("matrix", "firewall"):
            if not self.params[name]:
                self.module.fail_json(msg="state=%s needs %s" % (self.params["state"], name))
        return [self.params["matrix"], "--firewall", self.params["firewall"]]

    def json_of(self, what, rc, out, err, argv):
        """What the command printed with --format json; None when it printed nothing (an error
        before it had anything to say)."""
        if not out.strip():
            return None
        try:
            return json.loads(out)
        except ValueError:
            self.module.fail_json(msg="%s did not print JSON" % what, rc=rc, stdout=out, stderr=err, cmd=argv)

    def audit(self):
        args = ["audit"] + self.target() + ["--backend", self.params["backend"], "--live", "--format", "json"]
        rc, out, err, argv = self.run(args, in_netns=True)
        if rc not in (0, 1):  # 1: findings
            self.fail("fwmatrix audit", rc, out, err, argv)
        return self.json_of("fwmatrix audit", rc, out, err, argv), out

    def apply(self):
        """The apply's report (fwmatrix.apply/1): the plan (the live audit, the diff), and what was done."""
        args = ["apply"] + self.target() + ["--backend", self.params["backend"], "--format", "json"] + self.common()
        if self.params["compiled"]:
            args += ["--compiled", self.params["compiled"]]
        if self.module.check_mode:
            args.append("--dry-run")
        else:
            if self.params["confirm"]:
                args += ["--confirm", str(self.params["confirm"]), "--timer", self.params["timer"]]
            if self.params["force"]:
                args.append("--force")
        rc, out, err, argv = self.run(args)
        report = self.json_of("fwmatrix apply", rc, out, err, argv)
        if rc != 0:  # refused or failed: the live ruleset is what it was; the plan says why
            said = (err.strip().splitlines() or [(report or {}).get("error") or ""])[-1]
            self.module.fail_json(msg="fwmatrix apply failed (exit %d): %s" % (rc, said), rc=rc, report=report,
                                  stderr=err, cmd=argv)
        return report

    def confirm(self):
        """Whether an armed rollback was cancelled; nothing armed is no change, a rollback that fired a failure."""
        args = ["confirm", "--format", "json"] + self.common(netns=False)
        rc, out, err, argv = self.run(args)
        report = self.json_of("fwmatrix confirm", rc, out, err, argv)
        if rc == 0:
            return True, report
        if rc == 1 and report is not None and not report["rolled_back"]:
            return False, report
        self.fail("fwmatrix confirm", rc, out, err, argv)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["applied", "confirmed", "audited"], default="applied"),
            matrix=dict(type="path"),
            controller_matrix=dict(type="path"),  # taken by the action plugin, never seen here
            controller_fwmatrix=dict(type="str", default="fwmatrix"),
            compiled=dict(type="path"),
            firewall=dict(type="str"),
            backend=dict(type="str", choices=["nftables", "iptables"], default="nftables"),
            confirm=dict(type="int", default=120),
            timer=dict(type="str", choices=["auto", "detached", "systemd"], default="auto"),
            force=dict(type="bool", default=False),
            fwmatrix=dict(type="str", default="fwmatrix"),
            netns=dict(type="str"),
            state_dir=dict(type="path"),
        ),
        required_if=[("state", "applied", ("matrix", "firewall")), ("state", "audited", ("matrix", "firewall"))],
        supports_check_mode=True,
    )
    firewall = Firewall(module)
    state = module.params["state"]
    if state == "audited":
        report, out = firewall.audit()
        module.exit_json(changed=False, audit=report, clean=not report.get("findings"), stdout=out)
    if state == "confirmed":
        if module.check_mode:
            module.exit_json(changed=False)
        confirmed, report = firewall.confirm()
        module.exit_json(changed=confirmed, confirm=report)
    report = firewall.apply()
    diff = report["diff"]
    result = dict(changed=report["changes"], ruleset_diff=diff, rollback=report.get("rollback"), report=report)
    if module.check_mode:  # the plan's audit of the live ruleset; when it has none, the audit says why
        audit = report["before"] if report["before"] is not None else firewall.audit()[0]
        result.update(audit=audit, clean=not audit.get("findings"))
    if module._diff and diff:
        result["diff"] = {"prepared": diff}
    module.exit_json(**result)


if __name__ == "__main__":
    main()

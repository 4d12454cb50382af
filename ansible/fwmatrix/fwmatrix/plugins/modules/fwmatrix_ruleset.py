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
  - With O(state=applied) the firewall's ruleset is rendered from the matrix and loaded with
    C(fwmatrix apply), which validates it, refuses one that would cut the management access the
    matrix declares, backs up the live ruleset and loads the new one atomically. With O(confirm)
    (the default) the previous ruleset comes back by itself unless the ruleset is confirmed in
    time (O(state=confirmed)), also when the connection to the firewall is lost.
  - In check mode nothing is touched. The module reports the audit of the live ruleset against
    the matrix and whether an apply would change fwmatrix's part of the ruleset
    (C(fwmatrix apply --dry-run)); with C(--diff) it shows that change as a unified diff.
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
      - Required with O(state=applied) and O(state=audited).
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
    firewall: "{{ inventory_hostname }}"

- name: Apply, rolled back by itself unless confirmed within 60 s
  fwmatrix.fwmatrix.fwmatrix_ruleset:
    matrix: /etc/fwmatrix/site.yaml
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
armed:
  description: The line saying until when the apply must be confirmed.
  returned: when state is applied with confirm, not in check mode
  type: str
stdout:
  description: What the fwmatrix command printed.
  returned: always
  type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule

DIFF_HEADER = "fwmatrix's own part of the ruleset, live → after the apply:"
NOTHING_ARMED = "nothing to confirm: no rollback is armed"


def ruleset_diff(output):
    """The unified diff `fwmatrix apply` prints under its header, up to the result line after it."""
    if DIFF_HEADER not in output:
        return ""
    lines = []
    for line in output.split(DIFF_HEADER, 1)[1].splitlines()[1:]:
        if line.startswith(("dry run:", "applied in ")):
            break
        lines.append(line)
    return "\n".join(lines).strip("\n") + "\n"


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

    def audit(self):
        args = ["audit"] + self.target() + ["--backend", self.params["backend"], "--live", "--format", "json"]
        rc, out, err, argv = self.run(args, in_netns=True)
        if rc not in (0, 1):  # 1: findings
            self.fail("fwmatrix audit", rc, out, err, argv)
        try:
            report = json.loads(out)
        except ValueError:
            self.module.fail_json(msg="fwmatrix audit did not print JSON", stdout=out, stderr=err, cmd=argv)
        return report, out

    def apply(self):
        args = ["apply"] + self.target() + ["--backend", self.params["backend"]] + self.common()
        if self.module.check_mode:
            args.append("--dry-run")
        else:
            if self.params["confirm"]:
                args += ["--confirm", str(self.params["confirm"]), "--timer", self.params["timer"]]
            if self.params["force"]:
                args.append("--force")
        rc, out, err, argv = self.run(args)
        if rc != 0:
            self.fail("fwmatrix apply", rc, out, err, argv)
        return out

    def confirm(self):
        args = ["confirm"] + self.common(netns=False)
        rc, out, err, argv = self.run(args)
        if rc == 0:
            return True, out
        if rc == 1 and NOTHING_ARMED in err + out:
            return False, out + err
        self.fail("fwmatrix confirm", rc, out, err, argv)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["applied", "confirmed", "audited"], default="applied"),
            matrix=dict(type="path"),
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
            module.exit_json(changed=False, stdout="")
        confirmed, out = firewall.confirm()
        module.exit_json(changed=confirmed, stdout=out)
    result = {}
    if module.check_mode:
        report, _ = firewall.audit()
        result.update(audit=report, clean=not report.get("findings"))
    out = firewall.apply()
    diff = ruleset_diff(out)
    result.update(changed=bool(diff), ruleset_diff=diff, stdout=out)
    if module._diff and diff:
        result["diff"] = {"prepared": diff}
    armed = [line for line in out.splitlines() if line.startswith("rollback armed")]
    if armed:
        result["armed"] = armed[0]
    module.exit_json(**result)


if __name__ == "__main__":
    main()

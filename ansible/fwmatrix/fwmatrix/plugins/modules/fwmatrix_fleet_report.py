#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache License 2.0 (see the LICENSE file of fwmatrix)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fwmatrix_fleet_report
short_description: Merge the audits of many firewalls into one report with a firewall column
version_added: "0.1.0"
description:
  - Reads the audit reports (C(fwmatrix audit --format json), or the C(audit) that
    M(fwmatrix.fwmatrix.fwmatrix_ruleset) returns) saved one file per host in O(src), named
    C(HOST.json), and writes one merged report as JSON, Markdown, JUnit XML and SARIF 2.1.0.
  - JUnit and SARIF are written by fwmatrix itself (C(fwmatrix fleet-report), the writers of
    C(fwmatrix audit --format junit/sarif)), so fwmatrix must be installed where this module runs.
  - "Meant to run on the controller (C(delegate_to: localhost), C(run_once: true))."
author:
  - fwmatrix contributors
options:
  src:
    description: The directory holding one audit JSON per host, C(HOST.json).
    type: path
    required: true
  json:
    description: Where to write the merged report as JSON (schema C(fwmatrix.fleet-audit/1)).
    type: path
  markdown:
    description: Where to write the merged report as Markdown (one table, a firewall column).
    type: path
  junit:
    description:
      - Where to write the merged report as JUnit XML; a testsuite per firewall (named C(HOST.FIREWALL)),
        a testcase per finding, failing when the finding reaches O(fail_on); a clean firewall has one passing testcase.
    type: path
  sarif:
    description:
      - Where to write the merged report as SARIF 2.1.0; a result per finding, with C(host) and C(firewall)
        in the result's properties and in its message.
    type: path
  fail_on:
    description: The least severity of a finding that fails its JUnit testcase (as C(fwmatrix audit --fail-on)).
    type: str
    choices: [info, low, medium, high]
    default: low
  fwmatrix:
    description: The fwmatrix command on the controller (for O(junit) and O(sarif)).
    type: path
    default: fwmatrix
notes:
  - Check mode is supported; nothing is written then.
"""

EXAMPLES = r"""
- name: Save each firewall's audit on the controller
  ansible.builtin.copy:
    content: "{{ audit.audit | to_nice_json }}"
    dest: "reports/audit/{{ inventory_hostname }}.json"
    mode: "0644"
  delegate_to: localhost

- name: One report for the fleet
  fwmatrix.fwmatrix.fwmatrix_fleet_report:
    src: reports/audit
    json: reports/fleet-audit.json
    markdown: reports/fleet-audit.md
    junit: reports/fleet-audit.junit.xml
    sarif: reports/fleet-audit.sarif
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
report:
  description: The merged report; each finding carries its C(host) and C(firewall).
  returned: always
  type: dict
  sample:
    schema: fwmatrix.fleet-audit/1
    clean: false
    firewalls:
      - {host: fw1, firewall: perimeter, verdict: "firewall 'perimeter' matches the matrix", findings: 0}
    findings:
      - {host: fw2, firewall: internal, kind: excess, severity: high, message: "forwarded, but no opening asks for it"}
clean:
  description: Whether no firewall has a finding.
  returned: always
  type: bool
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native


def merge(audits):
    """{host: audit report} -> one report, a row per firewall and every finding with its host."""
    firewalls, findings = [], []
    for host in sorted(audits):
        audit = audits[host]
        firewall = audit.get("firewall", host)
        firewalls.append({"host": host, "firewall": firewall, "matrix": audit.get("matrix"),
                          "verdict": audit.get("verdict"), "findings": len(audit.get("findings", []))})
        for finding in audit.get("findings", []):
            findings.append(dict(host=host, firewall=firewall, **finding))
    return {"schema": "fwmatrix.fleet-audit/1", "clean": not findings, "firewalls": firewalls, "findings": findings}


def cell(text):
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def markdown(report):
    lines = ["# Fleet audit", "", "| host | firewall | verdict | findings |", "|---|---|---|---|"]
    lines += ["| %s | %s | %s | %d |" % (cell(f["host"]), cell(f["firewall"]), cell(f["verdict"]), f["findings"])
              for f in report["firewalls"]]
    lines += ["", "## Findings", ""]
    if not report["findings"]:
        lines.append("None: every firewall matches the matrix.")
    else:
        lines += ["| firewall | host | kind | severity | finding | rule |", "|---|---|---|---|---|---|"]
        lines += ["| %s | %s | %s | %s | %s | %s |" % tuple(cell(f.get(key)) for key in ("firewall", "host", "kind", "severity", "message", "rule"))
                  for f in report["findings"]]
    return "\n".join(lines) + "\n"


def fleet_report(module, report, fmt):
    """The merged report as JUnit or SARIF, from fwmatrix's own writers (fwmatrix fleet-report)."""
    argv = [module.params["fwmatrix"], "fleet-report", "-", "--format", fmt, "--fail-on", module.params["fail_on"]]
    rc, out, err = module.run_command(argv, data=json.dumps(report), environ_update={"NO_COLOR": "1"})
    if rc != 0:
        last = ((err or out).strip().splitlines() or [""])[-1]
        module.fail_json(msg="fwmatrix fleet-report --format %s failed (exit %d): %s" % (fmt, rc, last), cmd=argv)
    return out


def write(module, path, text):
    """Written aside and renamed: the report is whole or absent."""
    partial = path + ".partial"
    with open(partial, "w") as out:
        out.write(text)
    module.atomic_move(partial, path)


def main():
    module = AnsibleModule(
        argument_spec=dict(src=dict(type="path", required=True), json=dict(type="path"), markdown=dict(type="path"),
                           junit=dict(type="path"), sarif=dict(type="path"), fwmatrix=dict(type="path", default="fwmatrix"),
                           fail_on=dict(type="str", default="low", choices=["info", "low", "medium", "high"])),
        supports_check_mode=True,
    )
    src = module.params["src"]
    audits = {}
    try:
        names = sorted(name for name in os.listdir(src) if name.endswith(".json"))
        for name in names:
            with open(os.path.join(src, name)) as handle:
                audits[name[: -len(".json")]] = json.load(handle)
    except (OSError, ValueError) as exc:
        module.fail_json(msg="cannot read the audits in %s: %s" % (src, to_native(exc)))
    report = merge(audits)
    changed = False
    if not module.check_mode:
        for key, text in (("json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"), ("markdown", markdown(report))):
            if module.params[key]:
                write(module, module.params[key], text)
                changed = True
        for key in ("junit", "sarif"):
            if module.params[key]:
                write(module, module.params[key], fleet_report(module, report, key))
                changed = True
    module.exit_json(changed=changed, report=report, clean=report["clean"])


if __name__ == "__main__":
    main()

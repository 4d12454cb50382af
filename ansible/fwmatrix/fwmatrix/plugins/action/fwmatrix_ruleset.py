# -*- coding: utf-8 -*-
# Apache License 2.0 (see the LICENSE file of fwmatrix)
"""The controller's half of fwmatrix.fwmatrix.fwmatrix_ruleset: with O(controller_matrix) and
state=applied, the firewall's ruleset is compiled here by the controller's fwmatrix
(C(fwmatrix compile -f FIREWALL -b BACKEND -o DIR)), its files are sent to the host's
temporary directory, and the module applies them as they are (C(fwmatrix apply --compiled)).
Every host gets its own file(s); what is loaded is what the controller compiled."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import subprocess
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

CONTROLLER_ONLY = ("controller_matrix", "controller_fwmatrix")


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    def compile_here(self, args):
        """FIREWALL's files compiled from the controller's matrix: a local directory (to remove), names."""
        if not args.get("firewall"):
            raise AnsibleActionFail("controller_matrix needs firewall")
        matrix = self._find_needle("files", args["controller_matrix"])
        local = tempfile.mkdtemp(prefix="fwmatrix-compiled-")
        argv = [args.get("controller_fwmatrix") or "fwmatrix", "compile", matrix, "--firewall", args["firewall"],
                "--backend", args.get("backend") or "nftables", "--output", local]
        try:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        except OSError as exc:
            shutil.rmtree(local)
            raise AnsibleActionFail("cannot run %s on the controller: %s" % (argv[0], exc))
        if proc.returncode != 0:
            shutil.rmtree(local)
            err = to_text(proc.stderr).strip().splitlines() or [""]
            raise AnsibleActionFail("fwmatrix compile failed on the controller (exit %d): %s" % (proc.returncode, err[-1]),
                                    result={"cmd": argv, "stderr": to_text(proc.stderr)})
        return local, sorted(os.listdir(local))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # the connection's tmpdir is used
        args = dict(self._task.args)
        state = args.get("state") or "applied"
        if args.get("controller_matrix") and state == "applied":
            if args.get("compiled"):
                raise AnsibleActionFail("controller_matrix and compiled are exclusive: give one")
            local, names = self.compile_here(args)
            try:
                if self._connection._shell.tmpdir is None:
                    self._make_tmp_path()
                remote_dir = self._connection._shell.tmpdir
                sent = [self._transfer_file(os.path.join(local, name), self._connection._shell.join_path(remote_dir, name))
                        for name in names]
                self._fixup_perms2([remote_dir] + sent)
            finally:
                shutil.rmtree(local)
            args["compiled"] = remote_dir
            result["compiled_files"] = names
        for name in CONTROLLER_ONLY:
            args.pop(name, None)
        try:
            result.update(self._execute_module(module_name="fwmatrix.fwmatrix.fwmatrix_ruleset", module_args=args,
                                               task_vars=task_vars))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

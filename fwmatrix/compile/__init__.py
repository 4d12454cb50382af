"""Compiling: a `Matrix` in, one Ruleset IR per firewall out.

intent places every opening on the firewalls its traffic crosses (the
flows and DNAT mappings each firewall must carry); ruleset lowers a
firewall's intent into the backend-neutral IR (fwmatrix.ir) that the
backends render.
"""

"""Auditing: a firewall's intent and a live ruleset (as IR) in, findings out.

evaluate runs the ruleset symbolically along the netfilter path and gives
its effective policy as packet spaces (fwmatrix.space); findings compares
that policy with the intent and decides every finding (missing, excess,
nat, dmz-to-internet, reply-blocked, shadowed, unmodelled).
"""

"""Operations on real firewalls and namespace labs.

apply loads a compiled ruleset safely (validate, plan, back up, load
atomically, verify, commit-confirmed rollback); management is its
anti-lockout check; lab and labrun prove a compiled ruleset with real
packets in network namespaces; signals keeps restores and clean-ups from
being cut in half.
"""

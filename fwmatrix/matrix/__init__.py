"""The matrix: a YAML file in, a validated, immutable `Matrix` out.

yamlnodes reads the file (size and nesting limits, UTF-8, lines kept),
loader turns the nodes into the typed model (model) and refuses bad input
with file:line, and resolve turns references (zones, hosts, roles, groups,
public addresses, literals) into networks and services.
"""

"""fwmatrix: a firewall connectivity matrix kept as data, compiled and audited."""

__version__ = "0.2.0"

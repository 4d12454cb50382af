"""The iptables backend, becoming a package: its one module moves here first, unchanged, so
that its history follows it; the next commit splits it by responsibility."""

from fwmatrix.backends.iptables.lower import *  # noqa: F403
from fwmatrix.backends.iptables.lower import _sections  # noqa: F401  (fwmatrix.ops.apply reads with it)

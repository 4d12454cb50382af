"""pf backend (being split into modules: the whole of it is in convert.py for now)."""

from fwmatrix.backends.pf.convert import *  # noqa: F401,F403

"""Run the `fwmatrix` command from another checkout (an older commit), for before/after runs.

    .venv/bin/python bench/_at_tree.py TREE ARGS...

TREE is a checkout of the repository (e.g. `git worktree add --detach DIR
REV`); its fwmatrix package (and backends/, which installs as
fwmatrix.backends) is imported instead of the one the venv has installed, with
the venv's third-party packages. bench/speed_bench.py --before TREE uses it
to measure the same commands, before and after, in one run.
"""

import importlib.abc
import importlib.util
import os
import sys
from importlib.machinery import PathFinder


class _TreeFinder(importlib.abc.MetaPathFinder):
    def __init__(self, tree: str):
        self.tree = tree

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "fwmatrix":
            return PathFinder.find_spec(fullname, [self.tree])
        if fullname == "fwmatrix.backends":
            location = os.path.join(self.tree, "backends")
            return importlib.util.spec_from_file_location(
                fullname, os.path.join(location, "__init__.py"), submodule_search_locations=[location])
        return None


def main() -> None:
    tree = os.path.abspath(sys.argv[1])
    sys.meta_path.insert(0, _TreeFinder(tree))
    sys.argv = ["fwmatrix"] + sys.argv[2:]
    from fwmatrix.cli import main as fwmatrix_main

    fwmatrix_main()


if __name__ == "__main__":
    main()

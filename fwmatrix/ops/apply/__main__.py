"""`python -m fwmatrix.ops.apply timer --state-dir DIR --token T`: the automatic rollback's timer process."""

import sys

from fwmatrix.ops.apply.timer import main

if __name__ == "__main__":  # pragma: no cover - the timer process
    sys.exit(main())

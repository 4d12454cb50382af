"""The `fwmatrix` command: the click group `main` and the registry of its commands.

One module per command or group of commands, each listing its click
commands in `COMMANDS`:

  compile.py   compile, check, show
  audit.py     audit
  review.py    diff, lint
  apply.py     apply, confirm, rollback
  lab.py       lab

They share common.py (exit codes, one-line errors, consoles, options, report
output). Imports go one way: this module imports the command modules, they
import common.py, and common.py imports no command. `fwmatrix.cli:main` is
the console script; `python -m fwmatrix` runs it too (fwmatrix/__main__.py).
"""

from __future__ import annotations

import click

from fwmatrix import __version__
from fwmatrix.cli import apply, audit, lab, review
from fwmatrix.cli import compile as compile_commands
from fwmatrix.cli.common import write_atomically

COMMANDS: tuple[click.Command, ...] = (
    *compile_commands.COMMANDS, *audit.COMMANDS, *review.COMMANDS, *apply.COMMANDS, *lab.COMMANDS,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fwmatrix")
def main() -> None:
    """fwmatrix: a firewall connectivity matrix kept as data.

    The matrix (YAML, see docs/matrix-format.md) says who may talk to whom, on
    which ports, through which NAT. fwmatrix compiles it into rulesets, one per
    firewall the traffic crosses.

    Exit codes: 0 clean; 1 findings or changes at or above the threshold
    (--fail-on, or --exit-code for diff); 2 usage or input error.
    """


for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["COMMANDS", "main", "write_atomically"]

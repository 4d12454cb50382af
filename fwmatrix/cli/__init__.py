"""The `fwmatrix` command: the click group `main` and the registry of its commands.

One module per command or group of commands, each listing its click
commands in `COMMANDS`:

  compile.py   compile, check, show
  audit.py     audit
  review.py    diff, lint
  apply.py     apply, confirm, rollback
  lab.py       lab
  exchange.py  export, import
  graph.py     graph
  query.py     query
  report.py    report, fleet-report

They share common.py (exit codes, one-line errors, consoles, options, report
output). Imports go one way: this module names the command modules, they
import common.py, and common.py imports no command. A command's module is
imported only when that command runs (or `--help` lists it): `fwmatrix
compile` never pays for the audit, apply or lab imports (`COMMAND_MODULES`,
the registry, maps each command's name to its module). `fwmatrix.cli:main`
is the console script; `python -m fwmatrix` runs it too (fwmatrix/__main__.py).
"""

from __future__ import annotations

import importlib
import re

import click

from fwmatrix import __version__
from fwmatrix.cli.consoles import COLORS, set_color

# command name -> the module under fwmatrix.cli whose COMMANDS holds it
COMMAND_MODULES: dict[str, str] = {
    "compile": "compile", "check": "compile", "show": "compile",
    "audit": "audit",
    "diff": "review", "lint": "review",
    "apply": "apply", "confirm": "apply", "rollback": "apply",
    "lab": "lab",
    "export": "exchange", "import": "exchange",
    "graph": "graph", "report": "report", "fleet-report": "report",
    "query": "query",
    "schema": "schema",
}


def load_command(name: str) -> click.Command:
    """The click command `name`, importing its module now."""
    module = importlib.import_module(f"fwmatrix.cli.{COMMAND_MODULES[name]}")
    return next(command for command in module.COMMANDS if command.name == name)


class _OneLineUsageError(click.ClickException):
    """A usage error as every other user error: one line, `error: ...`, exit 2 (click's
    own is three: the usage, a hint, the error)."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _one_line(exc: click.UsageError) -> _OneLineUsageError:
    from fwmatrix.errors import one_line

    message = re.sub(r"\. Did you mean (.*)\?$", r" (did you mean \1?)", one_line(exc.format_message())).rstrip(".")
    if message[:1].isupper() and message[1:2].islower():  # click's "Missing option": as fwmatrix's own, lower case
        message = message[0].lower() + message[1:]
    path = exc.ctx.command_path if exc.ctx is not None else "fwmatrix"
    return _OneLineUsageError(f"{path}: {message} (see {path} --help)")


class _LazyGroup(click.Group):
    """A group whose commands are imported when they are looked up (pip's way), and
    whose usage errors, its own and its commands', are one line."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: object) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMAND_MODULES else None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="fwmatrix")
@click.option("--color", type=click.Choice(COLORS), default="auto", show_default=True,
              help="Colour: auto on a terminal only (none when NO_COLOR is set), always, or never (no escape codes).")
def main(color: str) -> None:
    """fwmatrix: a firewall connectivity matrix kept as data.

    The matrix (YAML, see docs/matrix-format.md) says who may talk to whom, on
    which ports, through which NAT. fwmatrix compiles it into rulesets, one per
    firewall the traffic crosses.

    Exit codes: 0 clean; 1 findings or changes at or above the threshold
    (--fail-on, default low: every finding but info); 2 usage or input error (one line:
    error: ...).
    """
    set_color(color)


def __getattr__(name: str) -> object:
    # every command, for code that wants them all (imports every command module)
    if name == "COMMANDS":
        return tuple(load_command(command) for command in sorted(COMMAND_MODULES))
    if name == "write_atomically":
        from fwmatrix.cli.common import write_atomically

        return write_atomically
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMMANDS", "COMMAND_MODULES", "load_command", "main", "write_atomically"]

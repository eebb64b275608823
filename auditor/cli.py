"""The ``auditor`` command: a click group that builds pipelines from options, nothing else.

Each sub-command lives in ``auditor/commands/<name>.py`` and imports its heavy dependencies
(pandas, pyarrow, bcc, kubernetes) lazily, so ``auditor --help`` and the capture reader start fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from auditor import __version__
from auditor.errors import AuditorError

# module -> attribute names of click commands/groups it provides
_COMMANDS: dict[str, tuple[str, ...]] = {
    "auditor.commands.pcap": ("pcap",),
    "auditor.commands.analyze": ("analyze",),
    "auditor.commands.agent": ("agent", "record"),
    "auditor.commands.doctor": ("doctor",),
    "auditor.commands.collect": ("collect",),
    "auditor.commands.load": ("load",),
    "auditor.commands.rollout_test": ("rollout_test",),
    "auditor.commands.capture": ("capture",),
}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="auditor")
def cli() -> None:
    """Measure the endpoint propagation gap of Kubernetes rolling updates.

    Reads packet captures, Kubernetes watch streams and dataplane rule changes (offline), or
    watches them live on a node (agent), and explains every refused or reset connection.
    """


def _register() -> None:
    for module_name, names in _COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not built yet in this checkout
            raise
        for name in names:
            command = getattr(module, name, None)
            if isinstance(command, click.Command):
                cli.add_command(command, command.name or name)  # "rollout-test" from rollout_test


_register()


def main(argv: list[str] | None = None) -> Any:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        rv = cli.main(args=argv, prog_name="auditor", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)  # ctx.exit(n) returns n when standalone_mode is off
        return rv
    except click.exceptions.Abort:
        click.echo("auditor: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except AuditorError as exc:
        click.echo(f"auditor: {exc.line()}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # output piped into `head` and similar: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("auditor: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # last resort: one line, not a traceback
        if os.environ.get("AUDITOR_DEBUG"):
            raise
        click.echo(
            f"auditor: internal error: {type(exc).__name__}: {exc} "
            "(rerun with AUDITOR_DEBUG=1 for a traceback and report it)".replace("\n", " "),
            err=True,
        )
        sys.exit(3)

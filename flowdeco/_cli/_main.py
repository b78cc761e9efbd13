"""The command line's entry point: its parser, and how each way of ending maps to an exit status.

0: done (every node succeeded or was reused); 1: a node failed; 2: bad usage, input or
file, or a command refused (prune while a run is live); 130: interrupted (Ctrl-C). A user's
error is one line on stderr; ``--debug`` adds the traceback.

argparse, from the standard library, because flowdeco's runtime dependencies are fixed
(anyio, attrs, msgpack, OpenTelemetry): a CLI library would be one more for every user,
and argparse gives subcommands, ``--help`` on each, and type checks of option values.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from typing import TYPE_CHECKING, NoReturn

import flowdeco as fd

from . import _cache, _graph, _run, _runs
from ._output import UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The whole command line: ``flowdeco COMMAND ...``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the traceback of an error, not one line"
    )
    top = _Parser(
        prog="flowdeco",
        description="Run flowdeco pipelines, see their graphs and past runs, and manage the "
        "checkpoint store.",
        epilog="Run 'flowdeco COMMAND --help' for a command's options.",
    )
    top.add_argument("--version", action="version", version=f"flowdeco {fd.__version__}")
    commands = top.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in (_run, _graph, _runs, _cache):
        module.register(commands, common)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` (default: ``sys.argv[1:]``) and return its exit status."""
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            status: int = args.handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("flowdeco: interrupted; finished nodes are checkpointed", file=sys.stderr)
        return _INTERRUPTED
    except BrokenPipeError:  # `flowdeco runs | head`: the reader left, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, fd.FlowdecoError, OSError) as exc:  # a hook's failure stops a run: 1
        return _fail(exc, args.debug, 1 if isinstance(exc, fd.HookError) else 2)
    except Exception as exc:  # noqa: BLE001 - a bug of flowdeco's or the user's: one line too
        return _fail(exc, args.debug, 1, internal=True)
    return status


def _fail(exc: BaseException, debug: bool, status: int, internal: bool = False) -> int:
    if debug:
        traceback.print_exception(exc)
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if not isinstance(exc, (UsageError, fd.FlowdecoError)):
        text = f"{type(exc).__name__}: {text}"
    hint = " (--debug shows the traceback)" if internal and not debug else ""
    print(f"flowdeco: error: {text}{hint}", file=sys.stderr)
    return status


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """A warning as one line, ``flowdeco: warning: ...``: where in flowdeco it was raised
    means nothing to someone at a shell."""
    print(f"flowdeco: warning: {category.__name__}: {message}", file=sys.stderr)

"""The `conveyor` command line (Typer + Rich): one module per group of commands."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from conveyor.cli import declarations, events, executions, gc, pipelines, processes  # noqa: F401 - they register commands
from conveyor.cli.common import UsageError, app, errors, print_error, say


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        app(args=argv, prog_name="conveyor")
        code: int = 0
    except UsageError as err:  # raised while reading options, before run_async could report it
        print_error(str(err))
        code = 2
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            say(str(exit_.code), to=errors)
            code = 1
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown. The Temporal client's Rust threads can call into a
    finalizing interpreter and abort it (temporalio/sdk-python#300: "PyGILState_Release: thread
    state ... must be current when releasing"), turning a finished command into SIGABRT or SIGSEGV.
    Everything a command starts (embedded server, worker) is stopped before this point."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe: nothing more can be said
            pass
    os._exit(code)

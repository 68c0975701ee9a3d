"""What every module of the `fedi` command shares: its one-line error, and commands run inside an open instance.

`CliError` lives here rather than in fedi/cli.py because `python -m fedi.cli` runs
that file as `__main__`: a class defined there would not be the one the command
modules raise.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from fedi.config import Config

Command = Callable[[Config, argparse.Namespace], Awaitable[int]]
Work = Callable[[Any, argparse.Namespace], Awaitable[int]]


class CliError(Exception):
    """A failure to report as one line and exit 1."""


def in_context(*errors: type[Exception]) -> Callable[[Work], Command]:
    """Make `work(ctx, args)` a command run with the instance open (database and outbound client:
    a change may send activities); `errors` it raises are reported as one line."""

    def wrap(work: Work) -> Command:
        async def command(config: Config, args: argparse.Namespace) -> int:
            from fedi.app import close_context, open_context

            ctx = await open_context(config)
            try:
                return await work(ctx, args)
            except errors as exc:
                raise CliError(str(exc)) from None
            finally:
                await close_context(ctx)

        command.__doc__ = work.__doc__
        return command

    return wrap

"""The command line of this invocation, rebuilt from click's context for advice.

The summary of a run with errored rows offers the same command with `--retry-errors`:
rebuilt from what click parsed (arguments and options given on the command line; what
came from the environment stays there), so it works whatever program name started it.
"""

from __future__ import annotations

import shlex

import click
from click.core import ParameterSource


def command_line(ctx: click.Context, *extra: str) -> str:
    """This command as the user gave it (the arguments and options from the command line,
    not the environment), then `extra` unless already there; quoted for a shell."""
    words = ["batchrunner", ctx.info_name or ""]
    options: list[str] = []
    for param in ctx.command.params:
        if (
            param.name is None
            or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE
        ):
            continue
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif isinstance(param, click.Option) and param.is_flag:
            names = param.opts if value else param.secondary_opts
            options += [max(names, key=len)] if names else []
        elif isinstance(param, click.Option):
            options += [max(param.opts, key=len), str(value)]
    options += [word for word in extra if word not in options]
    return shlex.join(words + options)

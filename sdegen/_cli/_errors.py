"""One-line errors that name the flag at fault, and the wrapper that runs a command.

A command raises [`CLIError`][] for a bad flag value it can see itself, and lets the
library's `ValueError`s through; `run_command` prints any of them as one line,
`sdegen COMMAND: error: ...`, and returns exit status 2. Library messages name the
library's arguments (`` `image_column` ``); `flag_names` rewrites those a command
passes straight from a flag (`--image-column`) so the user reads the flag they typed.
"""

import argparse
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import ModuleType


class CLIError(ValueError):
    """A bad value of a flag, or a run folder that cannot be used."""


def one_line(text: object) -> str:
    """Collapse a message onto one line."""
    return " ".join(str(text).split())


def rename_args(message: str, names: Mapping[str, str]) -> str:
    """Replace `` `arg` `` (and `` `arg=` ``) by its flag, for the library arguments
    in `names` (e.g. `{"image_column": "--image-column"}`)."""
    for arg, flag in names.items():
        message = re.sub(rf"`{re.escape(arg)}=?`", flag, message)
    return message


@contextmanager
def flag_names(names: Mapping[str, str]) -> Iterator[None]:
    """Inside this block, a `ValueError` naming a library argument of `names` is
    re-raised as a [`CLIError`][] naming the flag instead."""
    try:
        yield
    except CLIError:
        raise
    except ValueError as e:
        raise CLIError(rename_args(str(e), names)) from None


def _handled() -> tuple[type[BaseException], ...]:
    # ValueError covers CheckpointError and the library's input checks; OSError file
    # system trouble; RuntimeError the errors raised inside compiled code
    # (equinox's error_if, XLA running out of memory); ImportError a missing extra.
    return (ValueError, OSError, RuntimeError, FloatingPointError, ImportError)


def run_command(module: ModuleType, func: str, args: argparse.Namespace) -> int:
    """Run `module.func(args)` after setting up the devices; print any error as one
    line and return the exit status (0, 2 for an error, 130 when interrupted)."""
    prefix = f"sdegen {args.command}"
    try:
        from ._devices import setup_devices

        args.mesh = setup_devices(args)
        command: Callable[[argparse.Namespace], object] = getattr(module, func)
        command(args)
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except _handled() as e:
        print(f"{prefix}: error: {one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2
    return 0

"""One-line errors that name the flag at fault.

A command raises [`CLIError`][] for a bad flag value it can see itself, and lets the
library's `ValueError`s through; `_command.run_command` prints any of them as one line,
`sdegen COMMAND: error: ...`, and returns exit status 2. Library messages name the
library's arguments (`` `image_column` ``); `flag_names` rewrites those a command
passes straight from a flag (`--image-column`) so the user reads the flag they typed.
"""

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


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

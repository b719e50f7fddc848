"""Running a command: set up the devices, call the command, print any error as one
line (`sdegen COMMAND: error: ...`) and return the exit status. The top of the
command line: it imports `_devices` and `_errors`, and nothing imports it but the
entry module `sdegen_cli`."""

import argparse
import sys
from collections.abc import Callable
from types import ModuleType

from ._devices import setup_devices
from ._errors import one_line


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

"""One owner per run folder: a process that trains into a folder holds a lock on it.

The lock is an advisory `fcntl.flock` on the file `.sdegen-owner` in the folder, which
also records the owner's process id, host and start time. The operating system drops
the lock when its process ends, however it ends (`kill -9` included), so a lock left
by a dead process is stale and simply taken over by the next one; the record it left
is overwritten. A second process that asks for a folder already owned gets a
`RunFolderBusy` naming the owner (pid and host) at once.

The lock is re-entrant within a process (asking again for a folder it owns is a
no-op) and is held until the process exits or `release_run_folder` is called.
On a system without `fcntl` (Windows) no lock is taken.
"""

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


OWNER_FILE = ".sdegen-owner"
_held: dict[str, int] = {}  # resolved folder -> open file descriptor holding the lock


class RunFolderBusy(ValueError):
    """A run folder is owned by another process (it is training into it)."""


def _owner_of(path: Path) -> str:
    try:
        rec = json.loads(path.read_text())
        return f"pid {rec['pid']} on host {rec['host']!r} (since {rec['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its record is unreadable)"


def claim_run_folder(folder: str | os.PathLike) -> Path:
    """Take the lock of `folder` (created if needed) for this process, or raise
    `RunFolderBusy` naming the process that holds it. Returns the lock file."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    key = str(d.resolve())
    lock = d / OWNER_FILE
    if key in _held:
        return lock
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return lock
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunFolderBusy(
            f"The run folder {str(d)!r} is in use by {_owner_of(lock)}: it is training "
            "into it. Wait for it to finish (or stop it), or choose another folder."
        ) from None
    record: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                              "since": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[key] = fd
    return lock


def probe_run_folder(folder: str | os.PathLike) -> None:
    """Raise `RunFolderBusy` if another process owns `folder`, without taking the
    lock (the command line asks before it imports JAX, so that a second `sdegen train`
    is refused in well under a second). Standard library only: the command line
    loads this module without importing sdegen."""
    lock = Path(folder) / OWNER_FILE
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    if not lock.is_file():
        return
    try:
        if json.loads(lock.read_text()).get("pid") == os.getpid():
            return  # this process owns it (re-entrant)
    except (OSError, ValueError, AttributeError):
        pass
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise RunFolderBusy(
            f"The run folder {str(folder)!r} is in use by {_owner_of(lock)}: it is "
            "training into it. Wait for it to finish (or stop it), or choose another "
            "folder."
        ) from None
    finally:
        os.close(fd)  # (also drops the lock just taken)


def release_run_folder(folder: str | os.PathLike) -> None:
    """Give up this process's lock on `folder` (a no-op when it holds none)."""
    fd = _held.pop(str(Path(folder).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock

"""Checkpoints: Equinox-serialised pytrees in one self-checking file, saved atomically.

File layout (format version 2):

    b"SDEGEN-CKPT\\n"                  12-byte magic
    header length                     8 bytes, unsigned little-endian
    header                            UTF-8 JSON: format version, payload size, step,
                                      hyper-parameters, extra data, and `sha256`
    payload                           `equinox.tree_serialise_leaves` of the pytree

The `sha256` checksum covers the whole file: the magic, the header (everything in
it that determines the model: the SDE, the network, the shape, ...; computed with
the checksum's own 64 hex digits set to `0`) and the payload. So any changed byte,
in the weights or in the header, fails the check and raises
[`sdegen.CheckpointError`][] naming the file. Files of format version 1 (written
before sdegen checksummed headers: `payload_sha256` covers the payload only) are
still read; their header is not protected.

Every write goes to a temporary file in the destination folder, is flushed to disk,
and is then moved into place with `os.replace` (atomic on POSIX and Windows), so a
reader never sees half a file. A process killed during a write leaves its temporary
file (`.NAME.<random>.tmp`) behind; [`sdegen.remove_stray_temp_files`][] deletes
such files, and [`sdegen.train`][] calls it on its folders when it starts. A file that is truncated or altered anyway (a copy cut
short, a full disk, bit rot) fails the size or checksum test and raises
[`sdegen.CheckpointError`][] naming the file, before any deserialisation happens.
"""

import hashlib
import io
import json
import os
import re
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np


MAGIC = b"SDEGEN-CKPT\n"
FORMAT_VERSION = 2
_READS = (1, 2)
_SUM_KEY = b'"sha256": "'
_ZEROS = b"0" * 64
_CKPT_RE = re.compile(r"^step_(\d+)\.ckpt$")
# `tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")`: 8 random characters.
_TMP_RE = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, from an unknown format
    version, or does not match the structure it is loaded into."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically: a temporary file in the same folder, flushed
    and fsynced, then `os.replace`d over `path`.

    **Returns:** the path written.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                   suffix=".tmp")  # fmt: skip
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            # e.g. ENOSPC from write/fsync: name the file (a full disk, which path?)
            raise OSError(e.errno, f"cannot write {str(path)!r}: {e.strerror}",
                          str(path)) from e  # fmt: skip
        raise
    return path


def remove_stray_temp_files(directory: str | os.PathLike, *,
                            target: str | None = None) -> list[Path]:  # fmt: skip
    """Delete the temporary files that [`sdegen.save_checkpoint`][] (or any atomic
    write of sdegen) left in `directory` when its process was killed before the
    final `os.replace`: files named `.NAME.<random>.tmp` (only those of the file
    `target` when given). Complete files are never touched. Call it only when no
    other process is writing to `directory` (or to `target`).

    **Returns:** the paths deleted.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        m = _TMP_RE.match(p.name)
        if m and (target is None or m.group("target") == target) and p.is_file():
            try:
                p.unlink()
            except FileNotFoundError:  # pragma: no cover - removed meanwhile
                continue
            removed.append(p)
    return sorted(removed)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON to `path` atomically (a temporary file, then
    `os.replace`)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def _json_default(x):
    if isinstance(x, np.generic | np.ndarray | jax.Array):
        return np.asarray(x).tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"Object of type {type(x).__name__} is not JSON serialisable.")


def save_checkpoint(
    path: str | os.PathLike,
    state: Any,
    hparams: dict[str, Any] | None = None,
    *,
    step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a pytree (e.g. a [`sdegen.TrainState`][]) to one checkpoint file,
    atomically.

    The arrays are written by `equinox.tree_serialise_leaves` (NumPy `.npy` records,
    bit-exact); the header holds the payload's size and a SHA-256 of the whole file
    (header included), so that damage or an edit is detected on load.

    **Arguments:**

    - `path`: the file to write (its folder is created if needed).
    - `state`: any pytree of arrays, Python scalars and static structure.
    - `hparams`: JSON-serialisable hyper-parameters, stored in the header.
    - `step`: the training step, stored in the header (taken from `state.step` when
      that exists).
    - `extra`: any other JSON-serialisable data (e.g. the loss history).

    **Returns:** the path written.
    """
    buf = io.BytesIO()
    eqx.tree_serialise_leaves(buf, state)
    payload = buf.getvalue()
    if step is None and hasattr(state, "step"):
        step = int(np.asarray(state.step))
    header = {
        "format_version": FORMAT_VERSION,
        "payload_bytes": len(payload),
        "sha256": _ZEROS.decode(),
        "step": step,
        "hparams": hparams or {},
        "extra": extra or {},
    }
    head = json.dumps(header, sort_keys=True, default=_json_default).encode()
    frame = MAGIC + struct.pack("<Q", len(head))
    digest = _digest(frame, head, payload)
    at = head.rfind(_SUM_KEY) + len(_SUM_KEY)
    head = head[:at] + digest + head[at + 64 :]
    return atomic_write_bytes(path, frame + head + payload)


def _digest(frame: bytes, head: bytes, payload: bytes) -> bytes:
    """SHA-256 (hex) of the magic, the header with its checksum's digits zeroed, and
    the payload. The checksum is the header's last string-valued top-level key in
    sorted order (`"step"`, after it, holds an int), hence found by `rfind`."""
    at = head.rfind(_SUM_KEY) + len(_SUM_KEY)
    h = hashlib.sha256(frame)
    h.update(head[:at] + _ZEROS + head[at + 64 :])
    h.update(payload)
    return h.hexdigest().encode()


def _read(path: str | os.PathLike, verify: bool) -> tuple[dict[str, Any], bytes]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    data = path.read_bytes()
    where = f"Checkpoint {str(path)!r}"
    if len(data) < len(MAGIC) + 8:
        raise CheckpointError(f"{where} is truncated ({len(data)} bytes, no header).")
    if data[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{where} is not an sdegen checkpoint (bad magic bytes).")
    (n,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if len(data) < start + n:
        raise CheckpointError(f"{where} is truncated inside its header.")
    try:
        header = json.loads(data[start : start + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where} has a corrupt header ({e}).") from None
    if not isinstance(header, dict) or "format_version" not in header:
        raise CheckpointError(f"{where} has a corrupt header (no format version).")
    version = header["format_version"]
    if version not in _READS or isinstance(version, bool):
        raise CheckpointError(
            f"{where} has format version {version!r}; this sdegen reads versions "
            f"{', '.join(map(str, _READS))}."
        )
    payload = data[start + n :]
    if verify:
        expected = header.get("payload_bytes")
        if len(payload) != expected:
            raise CheckpointError(
                f"{where} is truncated or padded: payload of {len(payload)} bytes, "
                f"expected {expected}."
            )
        if version == 1:  # the payload only
            ok = hashlib.sha256(payload).hexdigest() == header.get("payload_sha256")
        else:  # the whole file
            head = data[start : start + n]
            stored = header.get("sha256")
            ok = (isinstance(stored, str) and head.rfind(_SUM_KEY) >= 0
                  and _digest(data[:start], head, payload).decode() == stored)  # fmt: skip
        if not ok:
            raise CheckpointError(
                f"{where} is corrupt or was edited: SHA-256 checksum mismatch (format "
                f"version {version}; the checksum covers "
                f"{'the weights only' if version == 1 else 'the header and the weights'})."
            )
    return header, payload


def checkpoint_metadata(path: str | os.PathLike, *, verify: bool = True) -> dict:
    """The header of a checkpoint: `format_version`, `step`, `hparams`, `extra`,
    `payload_bytes`, `sha256` (`payload_sha256` in a file of format version 1).

    **Arguments:** `path`; `verify`: also check the payload's size and checksum.

    **Raises:** [`sdegen.CheckpointError`][] for a missing, truncated or corrupt file.
    """
    return _read(path, verify)[0]


def load_checkpoint(path: str | os.PathLike, like: Any) -> Any:
    """Load a checkpoint written by [`sdegen.save_checkpoint`][] into the structure
    of `like`.

    **Arguments:**

    - `path`: the checkpoint file.
    - `like`: a pytree with the same structure, shapes and dtypes as the saved one
      (e.g. a freshly initialised model and optimiser state); its values are ignored.

    **Returns:** the saved pytree, bit-exact.

    **Raises:** [`sdegen.CheckpointError`][] naming the file when it is missing,
    truncated or corrupt (checked by size and SHA-256 before deserialising), or
    when its structure, shapes or dtypes differ from `like`.
    """
    _, payload = _read(path, verify=True)
    where = f"Checkpoint {str(path)!r}"
    buf = io.BytesIO(payload)
    try:
        out = eqx.tree_deserialise_leaves(buf, like)
    except Exception as e:  # equinox raises RuntimeError / TreePathError / ValueError
        raise CheckpointError(
            f"{where} does not match the structure of `like`: {e}"
        ) from None
    if buf.tell() != len(payload):
        raise CheckpointError(
            f"{where} holds more leaves than `like`; it was saved from a different "
            "structure."
        )
    for (kp, a), b in zip(
        jax.tree_util.tree_leaves_with_path(out), jax.tree_util.tree_leaves(like)
    ):
        if hasattr(a, "dtype") and hasattr(b, "dtype") and a.dtype != b.dtype:
            raise CheckpointError(
                f"{where}: leaf {jax.tree_util.keystr(kp)} has dtype {a.dtype} on disk "
                f"but {b.dtype} in `like` (is jax_enable_x64 set the same way?)."
            )
    return out


def checkpoint_path(directory: str | os.PathLike, step: int) -> Path:
    """The file name used for step `step` in a checkpoint folder:
    `step_000000123.ckpt`."""
    return Path(directory) / f"step_{int(step):09d}.ckpt"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The checkpoint files in `directory`, by increasing step (unverified)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `directory`, or `None` when there is none.

    Files are tried from the highest step down; one that fails its size or checksum
    test is skipped with a warning, so a damaged newest file falls back to the one
    before it.
    """
    for p in reversed(list_checkpoints(directory)):
        try:
            _read(p, verify=True)
        except CheckpointError as e:
            warnings.warn(f"Skipping damaged checkpoint: {e}", stacklevel=2)
            continue
        return p
    return None

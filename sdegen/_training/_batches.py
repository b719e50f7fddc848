"""Where [`sdegen.train`][] gets the batch of step $s$: a pure function of the run's
data key and $s$, for an array, an `(x, labels)` pair, a
[`sdegen.data.DatasetSource`][] (streamed from a `datasets.Dataset`), or a sampler
`f(key, n)`.

Two ways to read the same batches: `data_source` gives `batch(s)`, one step at a time;
`chunked_source` gives the batches of a run of steps to a compiled multi-step loop
(`sdegen._training._train._steps`): `stack(s0, k)`, the batches of steps $s_0 \\ldots s_0 + k - 1$
stacked (nothing for a sampler, which draws in the loop), and a traced part
`pick(chunk, i, s)`, the batch of step $s = s_0 + i$ inside the loop."""

import abc
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._core._checks import check_int, error_if_not_finite
from ..data._source import DatasetSource


# The stacked batches of a chunk (gathered on the device from an array, read on the
# host from a DatasetSource): at most this many bytes, and at most `MAX_CHUNK` steps.
_STREAM_CHUNK_BYTES = 8 * 2**20
MAX_CHUNK = 1024


def _epoch_permutation(key, epoch: int, n: int) -> np.ndarray:
    # The permutation of `sdegen.data.batch_indices`.
    return np.asarray(jr.permutation(jr.fold_in(key, epoch), n))


def _check_size(n: int, batch_size: int) -> None:
    if n == 0:
        raise ValueError("`data` must hold at least one example.")
    if batch_size > n:
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the data set ({n} examples)."
        )


class _Data(NamedTuple):
    """`data` checked: `sampler` (a function), `array` (`x` and optional `labels`,
    on the device) or `stream` (a `DatasetSource`)."""

    kind: str
    x: Any  # the sampler, the array or the DatasetSource
    labels: Any = None


def _checked(data: Any, batch_size: int) -> _Data:
    if isinstance(data, DatasetSource):
        _check_size(len(data), batch_size)
        return _Data("stream", data)
    if callable(data):
        return _Data("sampler", data)
    labels = None
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(
                "`data` must be an array, an (x, labels) pair, a "
                "sdegen.data.DatasetSource or a sampler f(key, n); got a tuple of "
                f"length {len(data)}."
            )
        data, labels = data
    try:
        data = jnp.asarray(data)
    except TypeError:
        raise ValueError(
            "`data` must be an array, an (x, labels) pair, a sdegen.data.DatasetSource "
            f"or a sampler f(key, n); got {type(data).__name__}."
        ) from None
    if data.ndim < 2:
        raise ValueError(f"`data` must have shape (N, *shape), got shape {data.shape}.")
    n = int(data.shape[0])
    _check_size(n, batch_size)
    if jnp.issubdtype(data.dtype, jnp.inexact):
        error_if_not_finite(data, "data")
    if labels is not None:
        labels = jnp.asarray(labels)
        if labels.shape != (n,) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"`labels` must be integers of shape ({n},) to match `data`, got "
                f"{labels.dtype} of shape {labels.shape}."
            )
    return _Data("array", data, labels)


def _rows_of_step(key, n: int, batch_size: int) -> Callable[[int], np.ndarray]:
    """`rows(s)`: the rows of batch `s`. Epoch $e$ of $N$ examples is the permutation
    `jax.random.permutation(fold_in(key, e), N)` cut into $\\lfloor N/B\\rfloor$
    batches (the remainder is left out)."""
    per_epoch = n // batch_size
    cache: dict[int, np.ndarray] = {}

    def rows(s: int) -> np.ndarray:
        epoch, i = divmod(s, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = _epoch_permutation(key, epoch, n).astype(np.int32)
        return cache[epoch][i * batch_size : (i + 1) * batch_size]

    return rows


def _stream_batch(source: DatasetSource, rows: np.ndarray) -> Any:
    out = source.batch(rows)
    if isinstance(out, tuple):
        return np.asarray(out[0]), np.asarray(out[1])
    return np.asarray(out)


def data_source(data: Any, batch_size: int, key: Any) -> Callable[[int], Any]:
    """`batch(step)` for `data` (see [`sdegen.train`][]), one step at a time."""
    batch_size = check_int("batch_size", batch_size)
    d = data if isinstance(data, _Data) else _checked(data, batch_size)
    if d.kind == "sampler":
        draw = jax.jit(lambda k: jnp.asarray(d.x(k, batch_size)))
        return lambda s: draw(jr.fold_in(key, s))
    rows = _rows_of_step(key, len(d.x), batch_size)
    if d.kind == "stream":
        return lambda s: jax.tree_util.tree_map(jnp.asarray, _stream_batch(d.x, rows(s)))
    return lambda s: _gather(d.x, d.labels, jnp.asarray(rows(s)))


@jax.jit
def _gather(x, labels, rows):
    """The examples (and labels) at `rows`: a batch `(B,)`, or a stack `(k, B)`."""
    return x[rows] if labels is None else (x[rows], labels[rows])


# ---------------------------------------------------------------- chunks of steps


class AbstractPick(eqx.Module):
    """How the compiled loop finds the batch of each step."""

    @abc.abstractmethod
    def __call__(self, chunk: Any, i: Any, s: Any) -> Any:
        """The batch of step `s`, the `i`-th step of its chunk (`chunk`: what
        `Chunks.stack` gave for it)."""


class _ByIdentity:
    """A callable that is a static argument of a compiled function by identity, so
    that any callable can be one (also one that is not hashable)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.fn is self.fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class _FromSampler(AbstractPick):
    sample: Callable  # a module (its arrays traced) or a `_ByIdentity` (static)
    batch_size: int = eqx.field(static=True)
    key: Any

    def __call__(self, chunk, i, s):
        return jnp.asarray(self.sample(jr.fold_in(self.key, s), self.batch_size))


class _FromStack(AbstractPick):
    def __call__(self, chunk, i, s):
        return jax.tree_util.tree_map(lambda a: a[i], chunk)


class Chunks(NamedTuple):
    """`pick` (traced), `stack(s0, k)` (the chunk's input: the batches of steps s0 ..
    s0+k-1 stacked, padded to `size` steps) and `size`, the most steps of a chunk."""

    pick: AbstractPick
    stack: Callable[[int, int], Any]
    size: int


def _padded(parts: list[np.ndarray], size: int) -> np.ndarray:
    out = np.zeros((size, *parts[0].shape), parts[0].dtype)
    out[: len(parts)] = parts
    return out


def _chunk_size(batch: Any) -> int:
    """Steps per chunk: stacked batches of at most `_STREAM_CHUNK_BYTES` (in the
    dtypes JAX will hold them in) and at most `MAX_CHUNK` steps."""
    nbytes = sum(math.prod(a.shape) * jnp.dtype(jax.dtypes.canonicalize_dtype(a.dtype)).itemsize
                 for a in jax.tree_util.tree_leaves(batch))  # fmt: skip
    return int(np.clip(_STREAM_CHUNK_BYTES // max(nbytes, 1), 1, MAX_CHUNK))


def chunked_source(data: Any, batch_size: int, key: Any) -> Chunks:
    """The batches of `data_source(data, batch_size, key)`, for runs of steps in one
    compiled loop. Arrays and streamed data both give stacked batches (gathered on the
    device, or read on the host), so the loop is one program for both and a run on a
    `DatasetSource` repeats the run on the array bit for bit."""
    batch_size = check_int("batch_size", batch_size)
    d = data if isinstance(data, _Data) else _checked(data, batch_size)
    if d.kind == "sampler":
        sample = d.x if isinstance(d.x, eqx.Module) else _ByIdentity(d.x)
        return Chunks(_FromSampler(sample, batch_size, key), lambda s0, k: None, MAX_CHUNK)
    rows = _rows_of_step(key, len(d.x), batch_size)
    if d.kind == "array":
        size = _chunk_size(jax.eval_shape(_gather, d.x, d.labels,
                                          jnp.zeros((batch_size,), jnp.int32)))  # fmt: skip

        def gathered(s0, k):
            rows_k = _padded([rows(s) for s in range(s0, s0 + k)], size)
            return _gather(d.x, d.labels, jnp.asarray(rows_k))

        return Chunks(_FromStack(), gathered, size)
    size = _chunk_size(_stream_batch(d.x, rows(0)))

    def stacked(s0, k):
        batches = [_stream_batch(d.x, rows(s)) for s in range(s0, s0 + k)]
        return jax.tree_util.tree_map(lambda *b: _padded(list(b), size), *batches)

    return Chunks(_FromStack(), stacked, size)


def checked_data(data: Any, batch_size: int) -> _Data:
    """`data` checked once, for both `data_source` and `chunked_source`."""
    return _checked(data, check_int("batch_size", batch_size))


def iterate_batches(data: Any, batch_size: int, seed: int = 0) -> Iterator[Any]:
    """The batches [`sdegen.train`][] uses with `seed`, in order (for inspection)."""
    source = data_source(data, batch_size, jr.fold_in(jr.key(seed), 1))
    s = 0
    while True:
        yield source(s)
        s += 1

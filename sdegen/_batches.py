"""Where [`sdegen.train`][] gets the batch of step $s$: a pure function of the run's
data key and $s$, for an array, an `(x, labels)` pair, a
[`sdegen.data.DatasetSource`][] (streamed from a `datasets.Dataset`), or a sampler
`f(key, n)`."""

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import check_int, error_if_not_finite
from .data._source import DatasetSource


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


def data_source(data: Any, batch_size: int, key: Any) -> Callable[[int], Any]:
    """`batch(step)` for `data` (see [`sdegen.train`][]). Epoch $e$ of an array or a
    `DatasetSource` of $N$ examples is the permutation
    `jax.random.permutation(fold_in(key, e), N)` cut into $\\lfloor N/B\\rfloor$
    batches (the remainder is left out)."""
    batch_size = check_int("batch_size", batch_size)
    if isinstance(data, DatasetSource):
        return _streamed(data, batch_size, key)
    if callable(data):
        draw = jax.jit(lambda k: jnp.asarray(data(k, batch_size)))
        return lambda s: draw(jr.fold_in(key, s))
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
    per_epoch = n // batch_size
    cache: dict[int, Any] = {}

    def batch(s: int):
        epoch, i = divmod(s, per_epoch)
        if epoch not in cache:
            cache.clear()
            # Gathered once per epoch on the device.
            perm = jnp.asarray(_epoch_permutation(key, epoch, n)[: per_epoch * batch_size])
            xs = data[perm].reshape(per_epoch, batch_size, *data.shape[1:])
            ys = None if labels is None else labels[perm].reshape(per_epoch, batch_size)
            cache[epoch] = (xs, ys)
        xs, ys = cache[epoch]
        return xs[i] if ys is None else (xs[i], ys[i])

    return batch


def _streamed(source: DatasetSource, batch_size: int, key) -> Callable[[int], Any]:
    n = len(source)
    _check_size(n, batch_size)
    per_epoch = n // batch_size
    cache: dict[int, np.ndarray] = {}

    def batch(s: int):
        epoch, i = divmod(s, per_epoch)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = _epoch_permutation(key, epoch, n)
        idx = cache[epoch][i * batch_size : (i + 1) * batch_size]
        out = source.batch(idx)
        if isinstance(out, tuple):
            return jnp.asarray(out[0]), jnp.asarray(out[1])
        return jnp.asarray(out)

    return batch


def iterate_batches(data: Any, batch_size: int, seed: int = 0) -> Iterator[Any]:
    """The batches [`sdegen.train`][] uses with `seed`, in order (for inspection)."""
    source = data_source(data, batch_size, jr.fold_in(jr.key(seed), 1))
    s = 0
    while True:
        yield source(s)
        s += 1

r"""In-memory image data: scikit-learn's 8×8 digits (embedded, no download) and a
deterministic shuffling batch iterator over arrays.

Loaders return channels-first floating arrays scaled to $[-1, 1]$ (the convention of
DDPM and score_sde), plus integer labels when there are any. Data sets too large for
memory come through [`sdegen.data.load_hf`][] instead.
"""

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._custom_types import KeyArray
from .._core._misc import default_float


def _check_finite_host(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"`{name}` contains {bad} non-finite values (NaN or inf).")


def load_digits(
    dtype: Any = None,
) -> tuple[Float[Array, "1797 1 8 8"], Int[Array, " 1797"]]:
    r"""scikit-learn's handwritten digits (UCI optdigits test set): 1797 grey images
    of 8×8 pixels with integer intensities $v \in \{0, \dots, 16\}$, shipped with
    scikit-learn (nothing is downloaded).

    Scaled to $[-1, 1]$ by $x = v / 8 - 1$, channels first.

    **Arguments:**

    - `dtype`: floating dtype of the images (JAX's default float when `None`).

    **Returns:** `(images, labels)` of shapes `(1797, 1, 8, 8)` and `(1797,)`, the
    labels being the digits 0–9.
    """
    pixels, target = _digits_table()
    images = pixels.reshape(-1, 1, 8, 8) / 8.0 - 1.0
    dtype = default_float() if dtype is None else dtype
    return jnp.asarray(images, dtype), jnp.asarray(target, jnp.int32)


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """`(pixels (1797, 64), labels)` from scikit-learn's `digits.csv.gz`, read as
    `sklearn.datasets.load_digits` reads it (one row per image: 64 intensities, then
    the label) but without importing scikit-learn (seconds), which ships the file."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError(
            "the embedded digits ship with scikit-learn, which is not installed; "
            "install the data extra: pip install 'sdegen[data]'."
        )
    for root in spec.submodule_search_locations or ():
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits  # another layout

    bunch = sk_load_digits()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target)


# ---------------------------------------------------------------- batching


def _check_batch_args(data, batch_size, labels):
    n = int(np.shape(data)[0]) if np.ndim(data) > 0 else 0
    if n == 0:
        raise ValueError("`data` must be an array of shape (N, ...) with N > 0.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if batch_size > n:
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the data set ({n} examples)."
        )
    if labels is not None and np.shape(labels)[:1] != (n,):
        raise ValueError(
            f"`labels` must have shape ({n},) to match `data`, got {np.shape(labels)}."
        )
    if isinstance(data, jax.Array) and not isinstance(data, jax.core.Tracer):
        if jnp.issubdtype(data.dtype, jnp.inexact) and not bool(
            jnp.all(jnp.isfinite(data))
        ):
            raise ValueError("`data` contains non-finite values (NaN or inf).")
    else:
        _check_finite_host(np.asarray(data), "data")
    return n, int(batch_size)


def batch_indices(
    key: KeyArray, n: int, batch_size: int, step: int
) -> Int[Array, " batch_size"]:
    r"""The example indices of batch number `step` of [`sdegen.data.batches`][].

    Epoch $e = \lfloor \text{step} / m \rfloor$ with $m = \lfloor n / B \rfloor$ batches
    per epoch uses the permutation `jax.random.permutation(fold_in(key, e), n)`, and
    batch `step` is its slice $[B(\text{step} \bmod m), B(\text{step} \bmod m + 1))$.
    A pure function of `(key, step)`, so training can resume mid-epoch exactly.
    """
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    perm = jr.permutation(jr.fold_in(key, epoch), n)
    return perm[i * batch_size : (i + 1) * batch_size]


def batches(
    key: KeyArray,
    data: Float[ArrayLike, " N *shape"],
    batch_size: int,
    *,
    labels: Int[ArrayLike, " num_labels"] | None = None,
    num_epochs: int | None = None,
    start_step: int = 0,
) -> Iterator[Any]:
    r"""Shuffled mini-batches, reshuffled every epoch, deterministic given `key`.

    Batch number $s$ (counting from 0 across epochs) is `data[batch_indices(key, N,
    batch_size, s)]`: each epoch is a fresh permutation of the $N$ examples, cut into
    $\lfloor N / B\rfloor$ full batches (the remainder of each permutation is left
    out, so every batch has the same shape and `jit` compiles once).

    **Arguments:**

    - `key`: PRNG key fixing all the shuffles.
    - `data`: array of shape `(N, ...)`, finite.
    - `batch_size`: $B \le N$.
    - `labels`: optional integer labels of shape `(N,)`; batches are then
      `(x, y)` pairs.
    - `num_epochs`: stop after this many epochs (counted from step 0); infinite when
      `None`.
    - `start_step`: the first batch number to yield (to resume a run).

    **Yields:** arrays of shape `(batch_size, ...)`, or `(x, y)` pairs.

    **Raises:** `ValueError` for an empty data set, `batch_size` not in $[1, N]$,
    labels of the wrong length, or non-finite data.
    """
    n, batch_size = _check_batch_args(data, batch_size, labels)
    data = jnp.asarray(data)
    labels = None if labels is None else jnp.asarray(labels)
    per_epoch = n // batch_size
    stop = math.inf if num_epochs is None else int(num_epochs) * per_epoch
    step, cached_epoch, perm = int(start_step), None, None
    while step < stop:
        epoch, i = divmod(step, per_epoch)
        if epoch != cached_epoch:
            perm = jr.permutation(jr.fold_in(key, epoch), n)
            cached_epoch = epoch
        idx = perm[i * batch_size : (i + 1) * batch_size]
        yield data[idx] if labels is None else (data[idx], labels[idx])
        step += 1

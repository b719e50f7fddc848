r"""Chunked, sharded maps over many examples: [`sdegen.map_in_chunks`][] and the two
uses every sampler and likelihood has, [`sdegen.sample_many`][] and
[`sdegen.log_likelihood_many`][]. Results do not depend on the chunk size or the
number of devices (the per-example computation and its key are the same).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Array, PyTree

from .._runs._distributed import (
    _batch_size,
    _check_mesh,
    _is_key,
    replicate,
    shard_batch,
    to_host,
)


def _slice(x: Any, start: int, stop: int, size: int) -> Any:
    """Rows [start, stop) of `x`, padded to `size` rows by repeating row `start`
    (a valid input, so padding never produces NaNs or errors)."""
    part = x[start:stop]
    pad = size - (stop - start)
    if pad == 0:
        return part
    if isinstance(x, np.ndarray):
        return np.concatenate([part, np.repeat(x[start : start + 1], pad, axis=0)])
    filler = jnp.repeat(x[start : start + 1], pad, axis=0)
    return jnp.concatenate([part, filler])


def _check_positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    return int(v)


@eqx.filter_jit
def _vmapped(fn, chunk, in_sh, out_sh):
    chunk = eqx.filter_shard(chunk, in_sh)
    return eqx.filter_shard(jax.vmap(fn)(chunk), out_sh)


def map_in_chunks(
    fn: Callable[[Any], Any],
    xs: PyTree[Any],
    *,
    chunk_size: int = 1024,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> PyTree[np.ndarray]:
    r"""Apply a per-example function to $N$ inputs, `chunk_size` at a time, each
    chunk sharded over the devices of `mesh`; results are gathered to the host.

    Equivalent to `jax.vmap(fn)(xs)`, but device memory holds one chunk (two while
    the next chunk is dispatched before the previous one is fetched), so $N$ can be
    as large as the host's memory allows. The last chunk is padded (by repeating its
    first input) to the common chunk shape, so `fn` compiles once, and the padding is
    dropped. Pass `fn` as an Equinox module or `equinox.Partial` to hand its arrays
    (e.g. a network) to the compiled function as arguments instead of constants;
    they are replicated over `mesh` (or put on the first local device without one).

    **Arguments:**

    - `fn`: a function of one example (an array or pytree without the batch axis),
      e.g. `lambda k: sdegen.sample_sde(k, sde, score, shape)`.
    - `xs`: the inputs: an array (e.g. a key array from `jax.random.split`) or a
      pytree of arrays sharing the leading size $N$; NumPy arrays stay on the host
      until their chunk is used.
    - `chunk_size`: examples per chunk; with a mesh, a multiple of its data-axis
      size. A chunk never exceeds $N$ rounded up to that multiple.
    - `mesh`: shard every chunk over this mesh's data axis (default: one device).
    - `axis_name`: the data axis of `mesh` (default: its only axis).
    - `progress`: show a `tqdm` progress bar counting examples.
    - `desc`: label of the progress bar.

    **Returns:** the outputs of `fn` stacked along a leading axis of size $N$, as
    NumPy arrays on the host.

    **Raises:** `ValueError` for a non-positive `chunk_size`, a `chunk_size` not
    divisible by the number of devices on the data axis, or inputs without a common
    leading size.
    """
    if not callable(fn):
        raise ValueError(f"`fn` must be callable, got {type(fn).__name__}.")
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    n = _batch_size(xs, "xs")
    if n < 1:
        raise ValueError("`xs` must hold at least one example (leading size 0).")
    if mesh is None:
        d = 1
        in_sh = out_sh = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        fn = jax.tree_util.tree_map(
            lambda x: jax.device_put(x, in_sh) if eqx.is_array(x) else x, fn
        )
    else:
        axis = _check_mesh(mesh, axis_name)
        d = mesh.shape[axis]
        if chunk_size % d != 0:
            raise ValueError(
                f"`chunk_size` {chunk_size} is not divisible by the size {d} of the "
                f"mesh's data axis {axis!r} ({d} devices); use a multiple of {d}."
            )
        in_sh = out_sh = NamedSharding(mesh, P(axis))
        # The arrays inside `fn` (e.g. a network) on every device of this mesh.
        fn = replicate(fn, mesh)
    size = min(chunk_size, -(-n // d) * d)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="example", dynamic_ncols=True)
    pieces: list[Any] = []
    pending: tuple[Any, int] | None = None

    def fetch(item):
        out, count = item
        host = to_host(out)
        pieces.append(jax.tree_util.tree_map(lambda a: a[:count], host))
        if bar is not None:
            bar.update(count)

    try:
        for start in range(0, n, size):
            stop = min(start + size, n)
            chunk = jax.tree_util.tree_map(
                lambda x: _slice(x, start, stop, size) if eqx.is_array_like(x) else x,
                xs,
            )
            if mesh is not None:
                chunk = shard_batch(chunk, mesh, axis_name=axis)
            out = _vmapped(fn, chunk, in_sh, out_sh)
            if pending is not None:
                fetch(pending)
            pending = (out, stop - start)
        if pending is not None:
            fetch(pending)
    finally:
        if bar is not None:
            bar.close()
    if len(pieces) == 1:
        return pieces[0]
    return jax.tree_util.tree_map(
        lambda *a: np.concatenate(a, axis=0)
        if isinstance(a[0], np.ndarray)
        else jnp.concatenate(a, axis=0),
        *pieces,
    )


def sample_many(
    key: Any,
    n: int,
    sampler: Callable[[Any], Any],
    *,
    chunk_size: int = 1024,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    progress: bool = False,
) -> PyTree[np.ndarray]:
    r"""Draw `n` samples with a one-sample sampler, in sharded chunks of bounded
    memory.

    Sample $i$ is `sampler(jax.random.split(key, n)[i])`, so the result equals
    `jax.vmap(sampler)(jax.random.split(key, n))` (to floating-point rounding of
    batched linear algebra) whatever the number of devices and the chunk size.

    **Arguments:**

    - `key`: a PRNG key.
    - `n`: number of samples.
    - `sampler`: `sampler(key) -> sample`, e.g.
      `lambda k: sdegen.sample_ode(k, sde, score, shape)` or an `equinox.Partial`
      of [`sdegen.sample_sde`][] (see [`sdegen.map_in_chunks`][]).
    - `chunk_size`, `mesh`, `axis_name`, `progress`: as in
      [`sdegen.map_in_chunks`][].

    **Returns:** the `n` samples stacked on a leading axis, as NumPy arrays.

    **Raises:** `ValueError` for a non-positive `n`, or as
    [`sdegen.map_in_chunks`][].
    """
    n = _check_positive_int("n", n)
    keys = jr.split(key, n)
    if _is_key(keys):
        impl = jr.key_impl(keys)
        data = np.asarray(jax.device_get(jr.key_data(keys)))
        inner = sampler
        sampler = eqx.Partial(_from_key_data, inner, impl)
        keys = data
    return map_in_chunks(sampler, keys, chunk_size=chunk_size, mesh=mesh,
                         axis_name=axis_name, progress=progress,
                         desc="samples")  # fmt: skip


def _from_key_data(sampler, impl, data):
    return sampler(jr.wrap_key_data(data, impl=impl))


def log_likelihood_many(
    sde: Any,
    score: Callable,
    xs: Any,
    key: Any = None,
    *,
    chunk_size: int = 1024,
    mesh: Mesh | None = None,
    axis_name: str | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> tuple[Array, Any]:
    r"""[`sdegen.log_likelihood`][] of every example of `xs`, in chunks sharded over
    `mesh` (device memory bounded by one chunk).

    Each example gets its own adaptive solve (as `log_likelihood_batch` with
    `per_sample_solves=True`); Hutchinson probes of example $i$ come from
    `jax.random.fold_in(key, i)`, the convention of
    [`sdegen.log_likelihood_batch`][], so the results agree with it and do not
    depend on the number of devices or the chunk size.

    **Arguments:**

    - `sde`, `score`: as in [`sdegen.log_likelihood`][]; pass an Equinox model as
      `score` so its weights are arguments of the compiled solve.
    - `xs`: the examples, with a leading batch axis (NumPy or JAX array).
    - `key`: PRNG key for Hutchinson probes (`None` for the exact trace).
    - `chunk_size`, `mesh`, `axis_name`, `progress`: as in
      [`sdegen.map_in_chunks`][].
    - `**kwargs`: options of [`sdegen.log_likelihood`][] (`solver`, `rtol`, `atol`,
      `trace`, `eps`, `num_probes`, ...).

    **Returns:** `(logp, stats)`: log-likelihoods in nats of shape `(N,)` and a
    [`sdegen.LikelihoodStats`][] with a leading axis of size $N$.
    """
    from .._likelihood._likelihood import log_likelihood

    if "key" in kwargs:
        raise ValueError("pass `key` as the fourth argument, not in `**kwargs`.")
    if isinstance(xs, np.ndarray):
        xs_in = xs
    else:
        xs_in = jnp.asarray(xs)
    if jnp.ndim(xs_in) < 1:
        raise ValueError(
            f"`xs` must have a leading batch axis, got shape {jnp.shape(xs_in)}."
        )
    n = jnp.shape(xs_in)[0]
    if n < 1:
        raise ValueError("`xs` must hold at least one example (leading size 0).")
    idx = np.arange(n, dtype=np.int32)
    fn = eqx.Partial(_one_likelihood, log_likelihood, sde, score, key,
                     kwargs)  # fmt: skip
    logp, stats = map_in_chunks(fn, (xs_in, idx), chunk_size=chunk_size, mesh=mesh,
                                axis_name=axis_name, progress=progress,
                                desc="log-likelihood")  # fmt: skip
    as_jax = lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a
    return jnp.asarray(logp), jax.tree_util.tree_map(as_jax, stats)


def _one_likelihood(log_likelihood, sde, score, key, kwargs, x_i):
    x, i = x_i
    k = None if key is None else jr.fold_in(key, i)
    return log_likelihood(sde, score, x, k, **kwargs)

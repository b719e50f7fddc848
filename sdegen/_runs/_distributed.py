r"""Data parallelism on several devices (and several hosts) with `jax.sharding`.

Everything here is built on JAX's own distributed engine, not on hand-written
`pmap`/`psum` plumbing: a one-dimensional [`jax.sharding.Mesh`][] over the devices
carries a *data* axis; a batch is placed with
`NamedSharding(mesh, PartitionSpec("data"))` (its leading axis split over the
devices), parameters and optimiser state with `NamedSharding(mesh, PartitionSpec())`
(replicated). A jitted step then runs as one SPMD program: XLA's partitioner inserts
the all-reduce of the gradients that the sharding annotations imply (GSPMD: Xu et al.
2021, "GSPMD: General and Scalable Parallelization for ML Computation Graphs"). With
a loss that averages over the batch, the result is the single-device step on the
same global batch, up to the order of floating-point summation.

Large batches of samples or likelihoods are computed by
[`sdegen.map_in_chunks`][]: a per-example function is `vmap`ped over chunks of a
fixed size, each chunk sharded over the mesh and its results moved to the host, so
device memory is bounded by one chunk whatever the number of examples. Sample $i$
of [`sdegen.sample_many`][] uses the key `jax.random.split(key, n)[i]`, so the
samples do not depend on the number of devices or the chunk size (the "one seed per
sample" of Karras et al. 2022, EDM, `generate.py`).

Several hosts: call [`sdegen.distributed_initialize`][] first in every process; then
`jax.devices()` lists the devices of all processes and [`sdegen.make_mesh`][] spans
them. Every process runs the same program on the same global batch (e.g. drawn from
the same seed); [`sdegen.shard_batch`][] keeps, on each process, only the slices of
its own devices.
"""

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Array, PyTree

from ._checkpoint import load_checkpoint, save_checkpoint


# ---------------------------------------------------------------- multi-host set-up


def distributed_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> tuple[int, int]:
    """Connect the processes of a multi-host job: a thin wrapper around
    `jax.distributed.initialize`.

    Call it once per process, before any other JAX call. Afterwards `jax.devices()`
    lists the devices of every process, and a mesh from [`sdegen.make_mesh`][] spans
    all hosts. On Slurm, Open MPI and Cloud TPU the arguments can be left out (JAX
    detects the cluster); otherwise pass them, identical on every process apart from
    `process_id`. Calling it again once initialised does nothing.

    **Arguments:**

    - `coordinator_address`: `"host:port"` of process 0, reachable from all processes.
    - `num_processes`: total number of processes.
    - `process_id`: this process's index in `[0, num_processes)`.
    - `local_device_ids`: the local devices this process uses (default: all).
    - `**kwargs`: passed on to `jax.distributed.initialize`
      (e.g. `initialization_timeout`).

    **Returns:** `(jax.process_index(), jax.process_count())`.

    **Raises:** `ValueError` for a `process_id` outside `[0, num_processes)` or
    `num_processes < 1`.
    """
    if num_processes is not None and (
        isinstance(num_processes, bool) or int(num_processes) < 1
    ):
        raise ValueError(f"`num_processes` must be an int >= 1, got {num_processes!r}.")
    if process_id is not None:
        bad = isinstance(process_id, bool) or int(process_id) < 0
        if not bad and num_processes is not None:
            bad = int(process_id) >= int(num_processes)
        if bad:
            raise ValueError(
                f"`process_id` must be an int in [0, num_processes), got "
                f"{process_id!r} (num_processes={num_processes!r})."
            )
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
            **kwargs,
        )
    return jax.process_index(), jax.process_count()


def is_main_process() -> bool:
    """True in process 0 (the one that writes files in a multi-host job; always
    true in a single process)."""
    return jax.process_index() == 0


# ---------------------------------------------------------------- mesh and placement


def make_mesh(
    num_devices: int | None = None,
    axis_name: str = "data",
    *,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A one-dimensional device mesh with a single data-parallel axis.

    **Arguments:**

    - `num_devices`: use the first `num_devices` devices (default: all of them, i.e.
      every device of every process after [`sdegen.distributed_initialize`][]).
    - `axis_name`: name of the mesh axis (default `"data"`).
    - `devices`: the devices to choose from (default `jax.devices()`).

    **Returns:** a `jax.sharding.Mesh` of shape `{axis_name: num_devices}` (with
    automatic axis types, so XLA propagates shardings through jitted code).

    **Raises:** `ValueError` when `num_devices` is not an int in `[1, available]` or
    `axis_name` is not a non-empty string.
    """
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("`devices` must hold at least one device, got none.")
    if num_devices is None:
        num_devices = len(devs)
    if (
        isinstance(num_devices, bool)
        or not isinstance(num_devices, int | np.integer)
        or not 1 <= num_devices <= len(devs)
    ):
        raise ValueError(
            f"`num_devices` must be an int in [1, {len(devs)}] (the number of "
            f"available devices), got {num_devices!r}."
        )
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"`axis_name` must be a non-empty string, got {axis_name!r}.")
    return Mesh(np.array(devs[: int(num_devices)], dtype=object), (axis_name,))


def _require_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"`mesh` must be a jax.sharding.Mesh (e.g. from sdegen.make_mesh), got "
            f"{type(mesh).__name__}."
        )


def _check_mesh(mesh: Any, axis_name: str | None) -> str:
    _require_mesh(mesh)
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(
                f"`mesh` has axes {mesh.axis_names}; pass `axis_name` to say which "
                "one is the data axis."
            )
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"`axis_name` {axis_name!r} is not an axis of the mesh (axes: "
            f"{mesh.axis_names})."
        )
    return axis_name


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(x: Any, sharding: NamedSharding) -> Any:
    """Place one array leaf with `sharding`. In a single process this is
    `jax.device_put`; with several processes every process holds the same global
    value and keeps the slices of its own devices."""
    if isinstance(x, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(x, sharding)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    if _is_key(x):
        impl = jr.key_impl(x)
        return jr.wrap_key_data(_put(jr.key_data(x), sharding), impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def _batch_size(batch: Any, name: str) -> int:
    leaves = [x for x in jax.tree_util.tree_leaves(batch) if eqx.is_array_like(x)]
    if not leaves:
        raise ValueError(f"`{name}` must hold at least one array, got {batch!r}.")
    sizes = set()
    for x in leaves:
        shape = jnp.shape(x)
        if len(shape) == 0:
            raise ValueError(
                f"every array of `{name}` needs a leading batch axis, got a scalar."
            )
        sizes.add(shape[0])
    if len(sizes) != 1:
        raise ValueError(
            f"the arrays of `{name}` must share their leading (batch) size, got "
            f"sizes {sorted(sizes)}."
        )
    return sizes.pop()


def check_divisible(batch_size: int, mesh: Mesh, axis_name: str | None = None) -> None:
    """Raise a clear `ValueError` when a global batch of `batch_size` examples cannot
    be split evenly over the data axis of `mesh`."""
    axis = _check_mesh(mesh, axis_name)
    d = mesh.shape[axis]
    if batch_size % d != 0:
        lo, hi = (batch_size // d) * d, (batch_size // d + 1) * d
        hint = f"{lo} or {hi}" if lo > 0 else f"{hi}"
        raise ValueError(
            f"The global batch size {batch_size} is not divisible by the size {d} of "
            f"the mesh's data axis {axis!r} ({d} devices); use a multiple of {d} "
            f"(e.g. {hint})."
        )


def batch_sharding(mesh: Mesh, axis_name: str | None = None) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec(axis_name))`: the leading axis split over
    the data axis."""
    return NamedSharding(mesh, P(_check_mesh(mesh, axis_name)))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """`NamedSharding(mesh, PartitionSpec())`: a full copy on every device."""
    _require_mesh(mesh)
    return NamedSharding(mesh, P())


def shard_batch(
    batch: PyTree[Any], mesh: Mesh, *, axis_name: str | None = None
) -> PyTree[Array]:
    """Split a batch over the data axis of `mesh`: every array of `batch` is placed
    with `NamedSharding(mesh, PartitionSpec(axis_name))`, i.e. device $j$ of $d$
    holds rows $[jB/d, (j+1)B/d)$ of the leading axis.

    Outside `jit` the arrays are moved to the devices (`jax.device_put`; with
    several processes, every process passes the same global batch and keeps the
    rows of its own devices); inside `jit` this is
    `jax.lax.with_sharding_constraint`.

    **Arguments:**

    - `batch`: an array or a pytree of arrays (e.g. `(x, labels)`) sharing the
      leading batch size $B$.
    - `mesh`: e.g. from [`sdegen.make_mesh`][].
    - `axis_name`: the data axis (default: the mesh's only axis).

    **Returns:** the batch with the same structure, sharded.

    **Raises:** `ValueError` when $B$ is not divisible by the size of the data axis
    (the message names both numbers), or when the arrays have no common leading
    size.
    """
    axis = _check_mesh(mesh, axis_name)
    check_divisible(_batch_size(batch, "batch"), mesh, axis)
    sharding = NamedSharding(mesh, P(axis))
    return jax.tree_util.tree_map(
        lambda x: _put(x, sharding) if eqx.is_array_like(x) else x, batch
    )


def replicate(tree: PyTree[Any], mesh: Mesh) -> PyTree[Any]:
    """A full copy of every array of `tree` (model, EMA, optimiser state, key) on
    every device of `mesh`: `NamedSharding(mesh, PartitionSpec())`. Non-array leaves
    are left as they are. Inside `jit` this is a sharding constraint."""
    _require_mesh(mesh)
    sharding = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda x: _put(x, sharding) if eqx.is_array(x) else x, tree
    )


def to_host(tree: PyTree[Any]) -> PyTree[Any]:
    """Copy every array of `tree` to the host as a NumPy array (typed PRNG keys stay
    JAX key arrays on the default device). Works on sharded and replicated arrays,
    also when some of their shards live on other processes (gathered with
    `jax.experimental.multihost_utils.process_allgather`)."""

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if _is_key(x):
            return jr.wrap_key_data(jnp.asarray(to_host(jr.key_data(x))),
                                    impl=jr.key_impl(x))  # fmt: skip
        if x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_shards[0].data)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree_util.tree_map(one, tree)


# ---------------------------------------------------------------- training steps


def _norm_argnums(argnums: int | Sequence[int], n: int, name: str) -> frozenset[int]:
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    out = set()
    for a in nums:
        if isinstance(a, bool) or not isinstance(a, int) or not -n <= a < n:
            raise ValueError(
                f"`{name}` must hold argument positions in [{-n}, {n}) for a step "
                f"called with {n} arguments, got {argnums!r}."
            )
        out.add(a % n)
    return frozenset(out)


def sharded_step(
    step_fn: Callable[..., Any],
    mesh: Mesh,
    *,
    batch_argnums: int | Sequence[int] = -2,
    axis_name: str | None = None,
    donate_argnums: int | Sequence[int] = (),
) -> Callable[..., Any]:
    r"""Data-parallel version of a training step: the batch sharded over the data
    axis of `mesh`, everything else (model, EMA, optimiser state, key) replicated.

    The step is traced once inside `equinox.filter_jit`, with sharding constraints
    on its inputs (batch: `PartitionSpec(axis_name)`; other arguments:
    `PartitionSpec()`) and on its outputs (all replicated). XLA partitions the
    program over the devices and inserts the all-reduce of the gradients; no
    `pmap` or `psum` is written by hand. For a loss that is a mean over the batch,
    step $s$ on $d$ devices equals the single-device step on the same global batch
    (to floating-point summation order), and random numbers drawn inside the step
    do not depend on $d$ (JAX's partitionable Threefry).

    **Arguments:**

    - `step_fn`: a step, e.g. `sdegen.make_step(loss_fn, optimizer, ema_decay)`,
      called as `step_fn(model, ema_model, opt_state, batch, key)`, or any function
      of positional arguments returning a pytree. It may itself be jitted.
    - `mesh`: e.g. [`sdegen.make_mesh`][]`()`.
    - `batch_argnums`: position(s) of the batch argument(s) (default `-2`: the one
      before the key, as in `(model, opt_state, batch, key)` and
      `(model, ema_model, opt_state, batch, key)`). Every array of a batch argument
      has the global batch size as its leading axis.
    - `axis_name`: the data axis (default: the mesh's only axis).
    - `donate_argnums`: positions whose buffers are donated (reused for the
      outputs); the caller must not use those inputs again. Default: none.

    **Returns:** `step(*args)` with the signature of `step_fn`, whose outputs are
    replicated over the mesh; `step.lower(*args)` gives the lowered program (its
    `.compile().compiled.as_text()` is the partitioned HLO, with the gradient
    all-reduce).

    **Raises:** `ValueError` (before anything is compiled) when a batch's leading
    size is not divisible by the number of devices on the data axis, naming both.
    """
    if not callable(step_fn):
        raise ValueError(f"`step_fn` must be callable, got {type(step_fn).__name__}.")
    axis = _check_mesh(mesh, axis_name)
    batch_sh = NamedSharding(mesh, P(axis))
    rep = NamedSharding(mesh, P())

    @eqx.filter_jit(donate="all-except-first")
    def _run(kept, donated, positions):
        merged = {**kept, **donated}
        args = [merged[i] for i in range(len(merged))]
        args = [
            eqx.filter_shard(a, batch_sh if i in positions else rep)
            for i, a in enumerate(args)
        ]
        return eqx.filter_shard(step_fn(*args), rep)

    def prepare(args):
        n = len(args)
        positions = _norm_argnums(batch_argnums, n, "batch_argnums")
        donate = _norm_argnums(donate_argnums, n, "donate_argnums")
        placed = []
        for i, a in enumerate(args):
            if i in positions:
                placed.append(shard_batch(a, mesh, axis_name=axis))
            else:
                placed.append(replicate(a, mesh))
        kept = {i: a for i, a in enumerate(placed) if i not in donate}
        donated = {i: a for i, a in enumerate(placed) if i in donate}
        return kept, donated, positions

    @functools.wraps(step_fn)
    def step(*args):
        return _run(*prepare(args))

    # `step.lower(*args)`: the lowered program (`.compile().compiled.as_text()`
    # shows the partitioned HLO with its all-reduce), for inspection.
    step.lower = lambda *args: _run.lower(*prepare(args))
    return step


# ---------------------------------------------------------------- checkpoints


def save_checkpoint_main(
    path: str | os.PathLike,
    state: Any,
    hparams: dict[str, Any] | None = None,
    *,
    step: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """[`sdegen.save_checkpoint`][] for sharded or replicated state in a
    (possibly multi-host) job: every process calls it; the arrays are gathered to
    the host, process 0 alone writes the file, and all processes then wait for each
    other, so that none reads the file before it exists. The file holds plain
    arrays and does not depend on the mesh, so it can be resumed on any number of
    devices ([`sdegen.load_checkpoint_replicated`][])."""
    host = to_host(state)
    if is_main_process():
        save_checkpoint(path, host, hparams, step=step, extra=extra)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"sdegen checkpoint {os.fspath(path)}")


def load_checkpoint_replicated(
    path: str | os.PathLike, like: Any, mesh: Mesh | None = None
) -> Any:
    """[`sdegen.load_checkpoint`][] in every process, then
    [`sdegen.replicate`][] the arrays over `mesh` (when given). A checkpoint
    written on any number of devices loads on any other."""
    state = load_checkpoint(path, like)
    return state if mesh is None else replicate(state, mesh)

"""Every input check of sdegen, in one place.

Structural mistakes (a wrong shape, an unknown name, an argument of the wrong kind)
raise `ValueError` when the function is called or traced, naming the argument and what
was expected. Value checks run eagerly on concrete values and through `eqx.error_if`
on traced ones, so they survive `jit` and `vmap`. Failures inside a solve (a state that
becomes non-finite) are raised by [`raise_if_failed`][] from the solve's statistics.
"""

import functools
import math
import os
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from ._misc import default_float, is_concrete, jit_when_eager


# ---------------------------------------------------------------- scalars


def concrete_float(name: str, value: Any) -> float | None:
    """`value` as a Python float when it is concrete, else `None`; raise if it is not
    a real scalar (also when traced: its shape and dtype are known)."""
    if not is_concrete(value):
        shape, dtype = jnp.shape(value), jnp.result_type(value)
        if shape != ():
            raise ValueError(f"`{name}` must be a scalar, got an array of shape {shape}.")
        if not jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(
            dtype, jnp.complexfloating
        ):
            raise ValueError(f"`{name}` must be a real number, got dtype {dtype}.")
        return None
    arr = np.asarray(value)
    if arr.shape != ():
        raise ValueError(f"`{name}` must be a scalar, got an array of shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"`{name}` must be a real number, got {value!r}.")
    return float(arr)


def staged(value: Any, bad: Any, message: str) -> Any:
    """The one staged check of sdegen's argument checks: `value`, with `message`
    raised through `eqx.error_if` when the traced condition `bad` holds (under `jit`
    or `vmap`). Entry points call it once per call on their arguments, outside any
    scanned loop, and pass the returned value on, so the check cannot be dropped."""
    value = jnp.asarray(value)
    return eqx.error_if(value, bad, message)


def check_finite_scalar(name: str, value: Any) -> Any:
    """A finite real scalar; returns `value` (staged when traced)."""
    v = concrete_float(name, value)
    if v is None:
        return staged(value, ~jnp.isfinite(value), f"`{name}` must be finite.")
    if not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {v}.")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """A finite real scalar `> 0` (or `>= 0` with `allow_zero`); returns `value`
    (when traced, with the check staged: use the returned value)."""
    bound = ">= 0" if allow_zero else "> 0"
    v = concrete_float(name, value)
    if v is None:
        ok = jnp.isfinite(value) & ((value >= 0) if allow_zero else (value > 0))
        return staged(value, ~ok, f"`{name}` must be finite and {bound}.")
    if not math.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"`{name}` must be finite and {bound}, got {v}.")
    return value


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """A Python (or NumPy) integer `>= minimum`; booleans are rejected."""
    if not is_concrete(value):
        raise ValueError(
            f"`{name}` must be a Python int (it fixes the shape of the computation), "
            "got a traced value; mark it static (e.g. `jax.jit(..., static_argnames="
            f"{name!r})`)."
        )
    ok = not isinstance(value, bool)
    try:
        ok = ok and int(value) == value
    except (TypeError, ValueError):
        ok = False
    if not ok or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {what}, got {value!r}.")
    return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(c) for c in choices)}, got "
            f"{value!r}."
        )
    return value


def check_callable(name: str, f: Any, what: str) -> None:
    """`f` must be callable; `what` describes the expected signature."""
    if not callable(f):
        raise ValueError(f"`{name}` must be a callable {what}, got {type(f).__name__}.")


def check_score(score: Any, name: str = "score") -> None:
    check_callable(name, score, f"{name}(t, x) -> Array")


def check_tols(rtol: Any, atol: Any) -> tuple[Any, Any]:
    """`(rtol, atol)`, each finite and > 0 (staged when traced)."""
    return check_positive("rtol", rtol), check_positive("atol", atol)


# ---------------------------------------------------------------- arrays


def check_shape_arg(name: str, shape: Any) -> tuple[int, ...]:
    """A `shape` argument: a tuple of positive ints (an int means a 1-tuple)."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
        exact = all(int(s) == s and not isinstance(s, bool) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a tuple of ints, got {shape!r}.") from None
    if not exact or any(s <= 0 for s in out):
        raise ValueError(f"`{name}` must be a tuple of positive ints, got {shape!r}.")
    return out


def check_shape(name: str, x: Any, shape: tuple[int, ...]) -> None:
    if tuple(jnp.shape(x)) != tuple(shape):
        raise ValueError(
            f"`{name}` must have shape {tuple(shape)}, got shape {tuple(jnp.shape(x))}."
        )


def as_float_array(x: Any, name: str) -> jax.Array:
    """A JAX floating array without downcasting: integer and boolean input becomes the
    default float dtype; floating input keeps its dtype."""
    try:
        arr = jnp.asarray(x)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a real array, got {type(x).__name__}."
        ) from None
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool:
            if jnp.issubdtype(arr.dtype, jnp.complexfloating):
                raise ValueError(f"`{name}` must be real, got dtype {arr.dtype}.")
            arr = arr.astype(default_float())
        else:
            raise ValueError(f"`{name}` must be a real array, got dtype {arr.dtype}.")
    return arr


def error_if_not_finite(x: jax.Array, name: str) -> jax.Array:
    """Raise (eagerly when concrete, through `eqx.error_if` under jit) if `x` holds
    NaN or infinity."""
    if is_concrete(x):
        # numpy, not jnp: under an outer jit, jnp on a closed-over constant traces.
        if not np.all(np.isfinite(np.asarray(x))):
            a = np.asarray(x)
            bad = int(np.sum(~np.isfinite(a)))
            raise ValueError(
                f"`{name}` contains non-finite values (NaN or inf): {bad} of {a.size}."
            )
        return x
    return eqx.error_if(
        x, jnp.any(~jnp.isfinite(x)), f"`{name}` contains non-finite values (NaN or inf)."
    )


def check_x(x: Any, shape: tuple[int, ...] | None, name: str) -> jax.Array:
    """One example (e.g. `x_init`): a finite float array of the given shape."""
    x = as_float_array(x, name)
    if shape is not None:
        check_shape(name, x, shape)
    return error_if_not_finite(x, name)


def check_x_deferred(x: Any, shape: tuple[int, ...] | None, name: str) -> tuple[Any, Any]:
    """As [`check_x`][], but for a traced `x` the finiteness check is returned as a
    flag (to fold into the one error check of the solve, see `raise_failure`) instead
    of being staged on its own."""
    x = as_float_array(x, name)
    if shape is not None:
        check_shape(name, x, shape)
    if is_concrete(x):
        return error_if_not_finite(x, name), False
    return x, ~jnp.all(jnp.isfinite(x))


def check_output(out: Any, like: Any, name: str, call: str = "(t, x)") -> jax.Array:
    """The output of a user callable (score, model, ...) must be an array of the shape
    of its input state; checked at trace time, so a scalar or a batched output is
    caught before it is broadcast into garbage."""
    try:
        out = jnp.asarray(out)
    except TypeError:
        raise ValueError(
            f"`{name}{call}` must return an array, got {type(out).__name__}."
        ) from None
    shape = tuple(jnp.shape(like))
    if tuple(out.shape) != shape:
        raise ValueError(
            f"`{name}{call}` must return an array of the state's shape {shape} (one "
            f"unbatched example), got shape {tuple(out.shape)}."
        )
    return out


# ---------------------------------------------------------------- times


def check_time(sde: Any, t: Any, name: str = "t") -> Any:
    r"""`t` must lie in $[0, T]$: a `ValueError` for a concrete value, an
    `eqx.error_if` for a traced one."""
    T = sde.T
    v = concrete_float(name, t)
    if v is not None:
        if not (0 <= v <= T):
            raise ValueError(f"`{name}` must lie in [0, T] = [0, {T}], got {v}.")
        return t
    t = jnp.asarray(t)
    return eqx.error_if(
        t, (t < 0) | (t > T), f"`{name}` must lie in [0, T] = [0, {T}]."
    )


def check_eps(sde: Any, eps: Any, name: str = "eps") -> Any:
    """$0 < \\varepsilon < T$; returns `eps` (staged when traced)."""
    v = concrete_float(name, eps)
    message = f"`{name}` must satisfy 0 < {name} < T = {sde.T}"
    if v is None:
        return staged(eps, ~((eps > 0) & (eps < sde.T)), message + ".")
    if not (0 < v < sde.T):
        raise ValueError(f"{message}, got {v}.")
    return eps


def check_grid(sde: Any, ts: Any, *, decreasing: bool, name: str = "ts") -> jax.Array:
    """A user-supplied time grid in the SDE's time: 1-D, at least two points, finite,
    strictly monotone and inside $(0, T]$ (or $[0, T]$ for a decreasing grid that ends
    on clean data, where the SDE allows it)."""
    ts = as_float_array(ts, name)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be a 1-D grid of at least 2 times, got shape {ts.shape}."
        )
    if is_concrete(ts):
        a = np.asarray(ts, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` contains non-finite values.")
        d = np.diff(a)
        if decreasing and not np.all(d < 0):
            raise ValueError(f"`{name}` must be strictly decreasing (from T towards 0).")
        if not decreasing and not np.all(d > 0):
            raise ValueError(
                f"`{name}` must be strictly increasing (from near 0 towards T)."
            )
        lo, hi = a.min(), a.max()
        if lo <= 0 or hi > sde.T * (1 + 1e-12):
            raise ValueError(
                f"`{name}` must lie in (0, T] = (0, {sde.T}], got range [{lo}, {hi}]."
            )
        return ts
    d = jnp.diff(ts)
    way = "decreasing (from T towards 0)" if decreasing else "increasing (from near 0)"
    bad_order = jnp.any(d >= 0) if decreasing else jnp.any(d <= 0)
    hi = jnp.asarray(sde.T, ts.dtype) * (1 + 4 * jnp.finfo(ts.dtype).eps)
    out = (jnp.min(ts) <= 0) | (jnp.max(ts) > hi)
    ts = staged(ts, jnp.any(~jnp.isfinite(ts)), f"`{name}` contains non-finite values.")
    ts = staged(ts, bad_order, f"`{name}` must be strictly {way}.")
    return staged(ts, out, f"`{name}` must lie in (0, T] = (0, {sde.T}].")


# ---------------------------------------------------------------- solve failures

_BUCKETS_PER_DECADE = 50
_LOW_DECADE = -8
_HIGH_DECADE = 5


@functools.lru_cache(maxsize=256)
def _failure_messages(where: str, input_name: str) -> tuple[str, ...]:
    """Message 0: a non-finite input; 1: the step limit; 2: an invalid time grid; then
    one per time bucket."""
    n = (_HIGH_DECADE - _LOW_DECADE) * _BUCKETS_PER_DECADE
    times = ["0"] + [
        f"{10 ** (_LOW_DECADE + k / _BUCKETS_PER_DECADE):.3g}" for k in range(n + 1)
    ]
    head = (
        f"{where}: `{input_name}` contains non-finite values (NaN or inf).",
        f"{where}: the adaptive solve failed: the maximum number of solver steps was "
        "reached. Increase `max_steps`, loosen rtol/atol, or pass throw=False and read "
        "stats.result.",
        f"{where}: its time grid is not finite and strictly decreasing: λ(t) = "
        "log(α/σ) or its inverse is not representable in the floating dtype there; use "
        "`grid='uniform'`, fewer `num_steps`, a larger `eps`, or enable float64.",
    )
    return head + tuple(
        f"{where}: the state became non-finite (NaN or inf) at t ≈ {t}: the score or "
        "model returned NaN or inf there (or the step size is too large for it). Pass "
        "throw=False to get the result and read its stats instead."
        for t in times
    )


# The failure code below is built from `lax` operations only: the jnp functions
# (`where`, `clip`, `round`, `max`, ...) are small jitted programs of their own, each
# traced and lowered on its own in a process's first call.


def _time_bucket(t: jax.Array) -> jax.Array:
    t = lax.abs(lax.convert_element_type(t, jnp.float32))
    log10 = lax.log(lax.max(t, np.float32(1e-30))) / np.float32(math.log(10.0))
    k = lax.round((log10 - _LOW_DECADE) * np.float32(_BUCKETS_PER_DECADE),
                  lax.RoundingMethod.TO_NEAREST_EVEN)  # fmt: skip
    n = (_HIGH_DECADE - _LOW_DECADE) * _BUCKETS_PER_DECADE
    k = lax.convert_element_type(lax.clamp(np.float32(0), k, np.float32(n)), jnp.int32)
    return lax.select(t < np.float32(10.0**_LOW_DECADE), lax.full_like(k, 0), k + 1)


def failure_index(nonfinite: Any, t: Any, step_limit: Any, bad_input: Any,
                  bad_grid: Any = False) -> tuple[Any, Any]:  # fmt: skip
    """`(failed, index)`: whether anything failed, and the message of the failure
    (see `_failure_messages`), first of: a non-finite input, an invalid time grid,
    the solve becoming non-finite at time `t` (bucketed to three digits), the step
    limit."""
    t = jnp.asarray(t)
    flags = [jnp.asarray(v, bool) for v in (nonfinite, step_limit, bad_input, bad_grid)]
    shape = jnp.broadcast_shapes(t.shape, *(f.shape for f in flags))
    nonfinite, step_limit, bad_input, bad_grid = (jnp.broadcast_to(f, shape) for f in flags)
    t = jnp.broadcast_to(t, shape)

    def code(c):
        return lax.full(shape, c, jnp.int32)

    bucket = 3 + _time_bucket(lax.select(nonfinite, t, lax.full_like(t, 0)))
    index = lax.select(bad_input, code(0), lax.select(
        bad_grid, code(2), lax.select(nonfinite, bucket, code(1))))  # fmt: skip
    failed = bad_input | bad_grid | nonfinite | step_limit
    index = lax.select(failed, index, code(0))
    if not shape:
        return failed, index
    return lax.reduce_or(failed, tuple(range(len(shape)))), lax.reduce_max(
        index, tuple(range(len(shape)))
    )


def raise_failure(y: Any, failed: Any, index: Any, *, where: str,
                  input_name: str = "x") -> Any:  # fmt: skip
    """Return `y`, raising ONE error if `failed` (from `failure_index`): immediately
    when eager, as one staged check under `jit`/`vmap`. The message says non-finite
    and names `where` (the sampler) and the time to three digits, or the step
    limit."""
    messages = _failure_messages(where, input_name)
    if is_concrete(failed):
        if not bool(failed):
            return y  # eager and nothing failed
        return eqx.branched_error_if(y, failed, index, messages)  # raises here
    return _staged_error_if(y, failed, index, where, input_name)


# equinox's setting for its runtime checks, read as equinox reads it (at import)
_ON_ERROR = os.environ.get("EQX_ON_ERROR", "raise")


def _raise_code(code: Any, messages: tuple[str, ...]) -> None:
    """Host side of the staged check: raise message `code` unless it is -1."""
    c = int(code)
    if c >= 0:
        raise RuntimeError(messages[c])


@jit_when_eager
def _staged_error_if(y, failed, index, where, input_name):
    # Compiled: under an eager `vmap` one program, not one per operation.
    messages = _failure_messages(where, input_name)
    if _ON_ERROR != "raise":  # EQX_ON_ERROR=nan/breakpoint/off: equinox's handling
        return eqx.branched_error_if(y, failed, index, messages)
    # One host callback on one scalar, the largest failure code over the batch (-1:
    # none), unconditionally: `eqx.error_if`'s conditional with two callbacks of
    # `y`'s shape cost a first call of `sample_ode` 0.14 s of compile time against
    # 0.09 s for this (benchmarks/bench_first_call.py's phases, EQX_ON_ERROR=off as
    # the baseline). An effect, so it is never dead code.
    code = eqxi.unvmap_max(lax.select(failed, index, lax.full_like(index, -1)))
    jax.debug.callback(functools.partial(_raise_code, messages=messages), code)
    return y


def describe(fn_name: str, solver: Any) -> str:
    """`"sample_sde (solver 'heun')"`: how errors name a sampler."""
    if solver is None:
        return fn_name
    if isinstance(solver, str):
        return f"{fn_name} (solver {solver!r})"
    return f"{fn_name} (solver {type(solver).__name__})"

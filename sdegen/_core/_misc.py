"""Small helpers shared across modules: dtypes and concreteness. Input checks live in
`_checks.py`."""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp


def default_float() -> Any:
    """The floating dtype JAX uses by default (float64 when x64 is on)."""
    return jnp.zeros(()).dtype


def is_concrete(x: Any) -> bool:
    """True when `x` holds a concrete value (not a tracer), so it can be validated
    in Python."""
    return not isinstance(x, jax.core.Tracer)


def shape_dtype(x: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of `x`, e.g. for a Brownian path that must match it."""
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


try:  # JAX's own test of a jit trace in progress (private; without it: any tracer)
    from jax._src.core import unsafe_am_i_under_a_jit as _under_jit
except ImportError:  # pragma: no cover
    _under_jit = None


def jit_when_eager(fn: Callable) -> Callable:
    """`fn` compiled as one program (`eqx.filter_jit`) when called eagerly or under an
    eager `vmap`, and `fn` itself when an argument is traced under an outer `jit`: a
    nested `jit` would only add a sub-program to trace, batch and lower there, the
    first call's cost, for nothing the outer program does not already give."""
    jitted = eqx.filter_jit(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _under_jit is not None and _under_jit():
            # staged into the outer program (also with concrete arguments only)
            return fn(*args, **kwargs)
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        if any(isinstance(x, jax.core.Tracer) for x in leaves) and (
            _under_jit is None or _under_jit()
        ):
            return fn(*args, **kwargs)
        return jitted(*args, **kwargs)

    return wrapper

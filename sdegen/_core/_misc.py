"""Small helpers shared across modules: dtypes and concreteness. Input checks live in
`_checks.py`."""

from typing import Any

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

"""Small helpers shared across modules: validation of user input, dtypes."""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def default_float() -> Any:
    """The floating dtype JAX uses by default (float64 when x64 is on)."""
    return jnp.zeros(()).dtype


def is_concrete(x: Any) -> bool:
    """True when `x` holds a concrete value (not a tracer), so it can be validated
    in Python."""
    return not isinstance(x, jax.core.Tracer)


def concrete_float(name: str, value: Any) -> float | None:
    """Return `value` as a Python float when it is concrete, else None; raise if it is
    not a real scalar."""
    if not is_concrete(value):
        return None
    arr = np.asarray(value)
    if arr.shape != ():
        raise ValueError(f"`{name}` must be a scalar, got an array of shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"`{name}` must be a real number, got {value!r}.")
    return float(arr)


def check_finite_scalar(name: str, value: Any) -> None:
    v = concrete_float(name, value)
    if v is not None and not math.isfinite(v):
        raise ValueError(f"`{name}` must be finite, got {v}.")


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    v = concrete_float(name, value)
    if v is None:
        return
    if not math.isfinite(v) or (v < 0 if allow_zero else v <= 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be finite and {bound}, got {v}.")


def check_shape(name: str, x: Any, shape: tuple[int, ...]) -> None:
    if tuple(jnp.shape(x)) != tuple(shape):
        raise ValueError(
            f"`{name}` must have shape {tuple(shape)}, got shape {tuple(jnp.shape(x))}."
        )


def check_shape_arg(name: str, shape: Any) -> tuple[int, ...]:
    """Validate a `shape` argument (tuple of positive ints)."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"`{name}` must be a tuple of ints, got {shape!r}.") from None
    if any(s <= 0 for s in out) or any(int(s) != s for s in shape):
        raise ValueError(f"`{name}` must be a tuple of positive ints, got {shape!r}.")
    return out


def error_if_not_finite(x: jax.Array, name: str) -> jax.Array:
    """Raise (eagerly when concrete, through `eqx.error_if` under jit) if `x` holds
    NaN or infinity."""
    import equinox as eqx

    if is_concrete(x):
        # numpy, not jnp: under an outer jit, jnp on a closed-over constant traces.
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"`{name}` contains non-finite values (NaN or inf).")
        return x
    return eqx.error_if(
        x, jnp.any(~jnp.isfinite(x)), f"`{name}` contains non-finite values."
    )


def as_float_array(x: Any, name: str) -> jax.Array:
    """Convert to a JAX floating array without downcasting: integer input becomes the
    default float dtype; floating input keeps its dtype."""
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.number) or arr.dtype == bool:
            arr = arr.astype(default_float())
        else:
            raise ValueError(f"`{name}` must be a real array, got dtype {arr.dtype}.")
    return arr


def shape_dtype(x: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of `x`, e.g. for a Brownian path that must match it."""
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))

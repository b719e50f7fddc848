"""Shared jaxtyping aliases.

Shapes follow the diffrax convention: functions act on one example of shape
`*data`; batches come from `jax.vmap`.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Key, PRNGKeyArray, Real, Shaped


if TYPE_CHECKING:
    RealScalarLike = float | int | Array | np.ndarray
    IntScalarLike = int | Array | np.ndarray
else:
    RealScalarLike = Real[ArrayLike, ""]
    IntScalarLike = Int[ArrayLike, ""]

Data = Float[Array, "*data"]
DataLike = Float[ArrayLike, "*data"]
Batch = Float[Array, "batch *data"]
BatchLike = Float[ArrayLike, "batch *data"]
Scalar = Float[Array, ""]
Time = RealScalarLike
ScoreFn = Callable[[Any, Any], Any]
"""A score function `score(t, x) -> Array` for one example `x` and scalar `t`."""

KeyArray = Key[Array, ""] | PRNGKeyArray | Shaped[Array, "2"]

__all__ = [
    "Array",
    "ArrayLike",
    "Batch",
    "BatchLike",
    "Data",
    "DataLike",
    "Float",
    "Int",
    "IntScalarLike",
    "KeyArray",
    "RealScalarLike",
    "Scalar",
    "ScoreFn",
    "Time",
]

r"""Linear observations $y = A x_0$ and the projections that enforce them during
sampling (Song et al. 2021, Appendix I.2–I.3; Song, Shen, Xing & Ermon 2022).

A projection at time $t$ replaces the part of $x_t$ that the observation determines by
a forward-noised observation $\hat y_t = \alpha(t)\,y + \sigma(t)\,A z$ through the
orthogonal projection $x \leftarrow x + A^{+}(\hat y_t - A x)$; for a mask (inpainting)
this is the replacement of the known entries, for colorization the replacement of the
grey channel in decoupled coordinates. They are [`sdegen.AbstractProjection`][]s, run
after every step by the [`sdegen.Projected`][] solver.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float

from .._core._checks import as_float_array, check_shape_arg, error_if_not_finite
from .._core._misc import is_concrete
from ._solvers import AbstractProjection


def check_obs(y: Any, name: str) -> Array:
    """An observation: a finite real array."""
    return error_if_not_finite(as_float_array(y, name), name)


class MatrixOp(eqx.Module):
    """$A$ as an `(m, d)` matrix acting on the flattened example."""

    matrix: Float[Array, "m d"]
    pinv: Float[Array, "d m"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, x):
        return self.matrix @ x.reshape(-1)

    def transpose(self, r):
        return (self.matrix.T @ r).reshape(self.shape)

    def pinv_apply(self, r):
        return (self.pinv @ r).reshape(self.shape)


class FunctionOp(eqx.Module):
    """$A$ as a linear callable; $A^\\top$ by `jax.linear_transpose`, and
    $A^{+} r = A^\\top (A A^\\top)^{-1} r$ by conjugate gradients (lineax)."""

    fn: Callable
    shape: tuple[int, ...] = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)

    def __call__(self, x):
        return self.fn(x)

    def transpose(self, r):
        sds = jax.ShapeDtypeStruct(self.shape, self.dtype)
        (out,) = jax.linear_transpose(self.fn, sds)(r)
        return out

    def pinv_apply(self, r):
        struct = jax.ShapeDtypeStruct(r.shape, r.dtype)
        op = lx.FunctionLinearOperator(
            lambda u: self.fn(self.transpose(u)), struct, lx.positive_semidefinite_tag
        )
        solver = lx.CG(rtol=1e-8, atol=1e-8, max_steps=10 * max(r.size, 10))
        u = lx.linear_solve(op, r, solver).value
        return self.transpose(u)


def as_operator(A, y, shape, *, check_rank: bool = True):
    """Validate `A` against the observation `y` and the data `shape`; return an
    operator object and the data shape."""
    y_shape = tuple(jnp.shape(y))
    if callable(A) and not isinstance(A, (jax.Array, np.ndarray)):
        if shape is None:
            raise ValueError(
                "`shape` (the shape of one data example) is required when `A` is a "
                "linear function."
            )
        shape = check_shape_arg("shape", shape)
        dtype = jnp.result_type(y)
        try:
            out = jax.eval_shape(A, jax.ShapeDtypeStruct(shape, dtype))
        except Exception as e:
            raise ValueError(
                f"`A` could not be applied to one example of shape {shape}: {e}"
            ) from e
        if tuple(out.shape) != y_shape:
            raise ValueError(
                f"`A` maps an example of shape {shape} to shape {tuple(out.shape)}, "
                f"but `y` has shape {y_shape}; they must agree."
            )
        return FunctionOp(A, shape, dtype), shape
    A = as_float_array(A, "A")
    if A.ndim != 2:
        raise ValueError(
            f"`A` must be a matrix of shape (m, d) or a linear function, got an array "
            f"of shape {A.shape}."
        )
    m, d = A.shape
    if shape is None:
        shape = (d,)
    shape = check_shape_arg("shape", shape)
    if math.prod(shape) != d:
        raise ValueError(
            f"`A` has {d} columns but one example of shape {shape} has "
            f"{math.prod(shape)} entries; they must agree."
        )
    if y_shape != (m,):
        raise ValueError(
            f"`y` must have shape ({m},) to match the {m} rows of `A`, got shape "
            f"{y_shape}."
        )
    pinv = jnp.linalg.pinv(A)
    if check_rank and is_concrete(A) and m > 0:
        rank = int(np.linalg.matrix_rank(np.asarray(A, np.float64)))
        if rank < m:
            raise ValueError(
                f"`A` must have full row rank (rank {m}) for a consistent noiseless "
                f"observation; got rank {rank}. Drop redundant rows of `A` and `y`."
            )
    return MatrixOp(A, pinv.astype(A.dtype), shape), shape


def check_mask(mask, shape) -> Array:
    mask_arr = jnp.asarray(mask)
    if tuple(mask_arr.shape) != tuple(shape):
        raise ValueError(
            f"`mask` must have the data's shape {tuple(shape)} (that of `y`), got "
            f"shape {tuple(mask_arr.shape)}."
        )
    if mask_arr.dtype != jnp.bool_:
        if is_concrete(mask_arr):
            vals = np.unique(np.asarray(mask_arr))
            if not np.all(np.isin(vals, [0, 1])):
                raise ValueError(
                    "`mask` must be boolean or hold only 0 and 1 (1 = observed), got "
                    f"values {vals[:5].tolist()}."
                )
        mask_arr = mask_arr != 0
    return mask_arr




class MaskProjection(AbstractProjection):
    r"""Replace the observed entries by $\alpha(t) y + \sigma(t) z$."""

    y: Array
    mask: Array

    def __call__(self, sde, t, x, z):
        y_t = sde._alpha(t) * self.y + sde._sigma(t) * z
        return jnp.where(self.mask, y_t.astype(x.dtype), x)

    def exact(self, x):
        return jnp.where(self.mask, self.y.astype(x.dtype), x)


def decoupling_matrix(num_channels: int = 3, dtype: Any = None) -> Float[Array, "c c"]:
    r"""The orthogonal matrix $Q$ of colorization's decoupled coordinates (Song et
    al. 2021, Appendix I.3): its first row is $(1, \dots, 1)/\sqrt{C}$, so for a
    pixel's colour vector $x \in \mathbb{R}^C$ the first coordinate of $Q x$ is
    $\sqrt{C}$ times the grey value (the channel mean), and the other rows span the
    colour directions orthogonal to it. For $C = 3$ this is the matrix of the
    score_sde code up to the signs of its rows.

    **Arguments:**

    - `num_channels`: $C \ge 1$.
    - `dtype`: floating dtype (JAX's default when `None`).

    **Returns:** $Q$ of shape `(C, C)` with $Q Q^\top = I$.
    """
    c = num_channels
    if isinstance(c, bool) or int(c) != c or c < 1:
        raise ValueError(f"`num_channels` must be a positive int, got {c!r}.")
    c = int(num_channels)
    # Householder-free Gram–Schmidt on (1, ..., 1), e_2, ..., e_C.
    basis = [np.ones(c) / math.sqrt(c)]
    for i in range(1, c):
        v = np.zeros(c)
        v[i] = 1.0
        for b in basis:
            v = v - (b @ v) * b
        basis.append(v / np.linalg.norm(v))
    q = np.stack(basis)
    return jnp.asarray(q, dtype or jnp.zeros(()).dtype)


class ColourProjection(AbstractProjection):
    r"""Replace the grey coordinate $u_0 = \sqrt{C}\,\bar x$ of $u = Q x$."""

    grey: Array
    q: Array

    def _replace(self, x, u0):
        u = jnp.einsum("ij,j...->i...", self.q, x)
        u = u.at[0].set(u0.astype(x.dtype))
        return jnp.einsum("ji,j...->i...", self.q, u)

    def __call__(self, sde, t, x, z):
        scale = math.sqrt(self.q.shape[0])
        return self._replace(x, sde._alpha(t) * scale * self.grey + sde._sigma(t) * z[0])

    def exact(self, x):
        return self._replace(x, math.sqrt(self.q.shape[0]) * self.grey)


class LinearProjection(AbstractProjection):
    r"""$x \leftarrow x + A^{+}(\alpha(t) y + \sigma(t) A z - A x)$."""

    op: eqx.Module
    y: Array

    def __call__(self, sde, t, x, z):
        y_t = sde._alpha(t) * self.y + sde._sigma(t) * self.op(z)
        return x + self.op.pinv_apply(y_t - self.op(x)).astype(x.dtype)

    def exact(self, x):
        return x + self.op.pinv_apply(self.y - self.op(x)).astype(x.dtype)

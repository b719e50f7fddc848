r"""Inpainting, colorization and linear inverse problems with an unconditional score.

The observation is linear, $y = A x_0 + n$ with $n \sim \mathcal{N}(0, s^2 I)$; we want
samples of $p(x_0 \mid y)$ using only a score model of $p_t(x)$. Two families:

- **Projection / consistency** (noiseless $y$; Song et al. 2021, "Score-Based
  Generative Modeling through Stochastic Differential Equations", Appendix I.2–I.3,
  and Song, Shen, Xing & Ermon 2022, "Solving Inverse Problems in Medical Imaging with
  Score-Based Generative Models"). A predictor–corrector sampler runs on the
  unconditional score; after every update the part of $x_t$ that the observation
  determines is replaced by a forward-noised observation
  $\hat y_t = \alpha(t)\,y + \sigma(t)\,A z$, $z \sim \mathcal{N}(0, I)$, by the
  orthogonal projection $x \leftarrow x + A^{+}(\hat y_t - A x)$. For a mask
  (inpainting) $A^{+} = A^\top$ and this is the replacement of the known entries
  (score_sde's PC inpainter); for colorization it is the replacement of the grey
  channel in the decoupled coordinates of Appendix I.3. The sample ends with the exact
  projection onto $\{A x = y\}$.

  The method is an approximation: it samples the unknown part as if
  $p_t(x_\text{unknown} \mid x_\text{known} = \hat y_t)$ were $p_t(x_\text{unknown}
  \mid y)$, which ignores how $y$ should reweight the modes of the prior. With a
  multimodal prior the posterior mode weights come out biased (the tests measure it).

- **Diffusion posterior sampling** (noisy $y$; Chung, Kim, Mccann, Klasky & Ye 2023,
  "Diffusion Posterior Sampling for General Noisy Inverse Problems"). The likelihood
  is approximated through Tweedie's denoised estimate
  $\hat x_0(x_t) = (x_t + \sigma(t)^2 s(t, x_t)) / \alpha(t)$,
  $p_t(y \mid x_t) \approx \mathcal{N}(y;\ A\hat x_0(x_t),\ s^2 I)$, giving the score
  $s(t, x) - \gamma\,\nabla_x \lVert y - A\hat x_0(x)\rVert^2 / (2 s^2)$.

For a Gaussian-mixture prior the posterior is a Gaussian mixture in closed form, and
so is its diffused version $p_t(x \mid y)$: [`sdegen.mixture_posterior`][] gives the
exact conditional score, for tests and as the exact variant of every method here.
"""

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import (
    as_float_array,
    check_positive,
    check_shape_arg,
    error_if_not_finite,
)
from ._custom_types import Data, DataLike, KeyArray, RealScalarLike
from ._integrate import grid_brownian, levy_area_for
from ._misc import is_concrete, shape_dtype as _sds
from ._sample import _tweedie
from ._sde import AbstractSDE
from ._solver_table import solver as get_solver
from ._terms import _check_score, _check_sde, reverse_terms
from .data._gmm import GaussianMixture, _mixture_score


# ---------------------------------------------------------------- linear operators


class _MatrixOp(eqx.Module):
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


class _FunctionOp(eqx.Module):
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


def _as_operator(A, y, shape, *, check_rank: bool = True):
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
        return _FunctionOp(A, shape, dtype), shape
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
    return _MatrixOp(A, pinv.astype(A.dtype), shape), shape


def _check_mask(mask, shape) -> Array:
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


# ---------------------------------------------------------------- projections


class _MaskProjection(eqx.Module):
    r"""Replace the observed entries by $\alpha(t) y + \sigma(t) z$."""

    y: Array
    mask: Array

    def __call__(self, sde, t, x, key):
        z = jr.normal(key, x.shape, x.dtype)
        y_t = sde.alpha(t) * self.y + sde.sigma(t) * z
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


class _ColourProjection(eqx.Module):
    r"""Replace the grey coordinate $u_0 = \sqrt{C}\,\bar x$ of $u = Q x$."""

    grey: Array
    q: Array

    def _replace(self, x, u0):
        u = jnp.einsum("ij,j...->i...", self.q, x)
        u = u.at[0].set(u0.astype(x.dtype))
        return jnp.einsum("ji,j...->i...", self.q, u)

    def __call__(self, sde, t, x, key):
        z = jr.normal(key, self.grey.shape, x.dtype)
        scale = math.sqrt(self.q.shape[0])
        return self._replace(x, sde.alpha(t) * scale * self.grey + sde.sigma(t) * z)

    def exact(self, x):
        return self._replace(x, math.sqrt(self.q.shape[0]) * self.grey)


class _LinearProjection(eqx.Module):
    r"""$x \leftarrow x + A^{+}(\alpha(t) y + \sigma(t) A z - A x)$."""

    op: eqx.Module
    y: Array

    def __call__(self, sde, t, x, key):
        z = jr.normal(key, x.shape, x.dtype)
        y_t = sde.alpha(t) * self.y + sde.sigma(t) * self.op(z)
        return x + self.op.pinv_apply(y_t - self.op(x)).astype(x.dtype)

    def exact(self, x):
        return x + self.op.pinv_apply(self.y - self.op(x)).astype(x.dtype)


# ---------------------------------------------------------------- the PC loop


def _langevin(sde, score, t, t_next, x, key, steps, snr):
    r"""Langevin corrector of Song et al. 2021 (Algorithm 4/5) with the step size
    $\epsilon = 2 a r^2 \sigma(t)^2$: score_sde's batch-averaged rule
    $2a(r\lVert z\rVert/\lVert s\rVert)^2$ with the norms at their Gaussian values
    $\lVert z\rVert^2 = D$, $\lVert s\rVert^2 = D/\sigma^2$ (see
    [`sdegen.LangevinCorrector`][], `step_rule="gaussian"`; a per-sample norm ratio
    blows up where $s \approx 0$). Here $a = \alpha(t)^2/\alpha(t_\text{next})^2$ (the
    discrete $\alpha_i$ of the VP chain; 1 for VE)."""
    a = ((sde.alpha(t) / sde.alpha(t_next)) ** 2).astype(x.dtype)
    step = 2 * a * snr**2 * (sde.sigma(t) ** 2).astype(x.dtype)

    def one(x, k):
        g = jnp.asarray(score(t, x)).astype(x.dtype)
        z = jr.normal(k, x.shape, x.dtype)
        return (x + step * g + jnp.sqrt(2 * step) * z).astype(x.dtype), None

    x, _ = jax.lax.scan(one, x, jr.split(key, steps))
    return x


@eqx.filter_jit
def _pc_loop(key, sde, score, x_init, ts, solver, corrector_steps, snr, project,
             denoise):  # fmt: skip
    k_bm, k_loop = jr.split(key)
    us = (sde.T - ts).astype(x_init.dtype)
    brownian = grid_brownian(us, _sds(x_init), k_bm, levy_area_for(solver))
    terms = reverse_terms(sde, score, brownian, reversed_time=True)
    state = solver.init(terms, us[0], us[1], x_init, None)
    n = ts.shape[0] - 1
    xs = (ts[:-1], ts[1:], us[:-1], us[1:], jr.split(k_loop, n))

    def body(carry, inp):
        x, st = carry
        t, t_next, u, u_next, k = inp
        kc, k1, k2 = jr.split(k, 3)
        if corrector_steps > 0:
            x = _langevin(sde, score, t, t_next, x, kc, corrector_steps, snr)
            if project is not None:
                x = project(sde, t, x, k1)
        # made_jump=True: the state was edited outside the solver, so no FSAL reuse.
        x, _, _, st, _ = solver.step(terms, u, u_next, x, None, st, True)
        if project is not None:
            x = project(sde, t_next, x, k2)
        return (x, st), None

    (x, _), _ = jax.lax.scan(body, (x_init, state), xs)
    if denoise:
        x = _tweedie(sde, score, ts[-1], x)
    if project is not None:
        x = project.exact(x)
    return x


def _prepare(key, sde, score, shape, solver, num_steps, eps, corrector_steps, snr,
             x_init, dtype):  # fmt: skip
    from ._sample import _check_eps, _check_num_steps, _check_x

    _check_sde(sde)
    _check_score(score)
    num_steps = _check_num_steps(num_steps)
    if isinstance(corrector_steps, bool) or int(corrector_steps) != corrector_steps or (
        corrector_steps < 0
    ):
        raise ValueError(
            f"`corrector_steps` must be a non-negative int, got {corrector_steps!r}."
        )
    check_positive("snr", snr)
    _check_eps(sde, eps)
    solver = get_solver(solver, kind="sde")
    k_prior, k_loop = jr.split(key)
    if x_init is None:
        x_init = sde.prior_sample(k_prior, shape).astype(dtype)
    else:
        x_init = _check_x(x_init, shape, "x_init")
    ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x_init.dtype)
    return k_loop, solver, int(corrector_steps), ts, x_init


def _check_obs(y, name):
    y = as_float_array(y, name)
    if is_concrete(y):
        # numpy, not jnp: under an outer jit, jnp ops on a constant give tracers.
        if not np.all(np.isfinite(np.asarray(y))):
            raise ValueError(f"`{name}` contains non-finite values (NaN or inf).")
        return y
    return error_if_not_finite(y, name)




def inpaint(
    key: KeyArray,
    sde: AbstractSDE,
    score: Any,
    y: DataLike,
    mask: ArrayLike,
    *,
    solver: str | diffrax.AbstractSolver = "euler_maruyama",
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    denoise: bool = False,
) -> Data:
    r"""Fill in the unobserved entries of one example with a predictor–corrector
    sampler and replacement (Song et al. 2021, Appendix I.2; score_sde's PC
    inpainter).

    After every corrector and predictor update at time $t$, the observed entries are
    set to a fresh forward-noised copy of the observation, $\alpha(t)\,y + \sigma(t)
    z$; at the end they are set to $y$ exactly. This is the projection method of
    this module with $A$ the selection of the observed entries, and it is
    approximate: the posterior weights of distinct modes are biased (see the module
    docstring). For a Gaussian-mixture prior, [`sdegen.mixture_posterior`][] gives
    the exact conditional score instead.

    **Arguments:**

    - `key`: PRNG key (prior draw, Brownian motion, corrector and replacement noise).
    - `sde`: the forward SDE.
    - `score`: the unconditional score `score(t, x)`.
    - `y`: the observation, with the data's shape; its unobserved entries are ignored.
    - `mask`: boolean (or 0/1) array of the data's shape, true where `y` is observed.
    - `solver`: the predictor, a name from [`sdegen.SOLVERS`][] (SDE-capable) or a
      diffrax solver; `"euler_maruyama"` is score_sde's reverse-diffusion predictor.
    - `num_steps`: uniform predictor steps from $T$ to `eps`.
    - `eps`: the last time $\varepsilon \in (0, T)$.
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.

    **Returns:** one sample of the data's shape, equal to `y` where `mask` is set.

    **Raises:** `ValueError` when `mask`'s shape differs from `y`'s, `mask` holds
    values other than 0/1, `y` is not finite, or a sampler option is invalid.
    """
    y = _check_obs(y, "y")
    mask = _check_mask(mask, y.shape)
    k, solver, csteps, ts, x_init = _prepare(
        key, sde, score, y.shape, solver, num_steps, eps, corrector_steps, snr, x_init,
        y.dtype,
    )  # fmt: skip
    y = jnp.where(mask, y, 0.0).astype(x_init.dtype)
    return _pc_loop(k, sde, score, x_init, ts, solver, csteps, snr,
                    _MaskProjection(y, mask), denoise)  # fmt: skip


def colorize(
    key: KeyArray,
    sde: AbstractSDE,
    score: Any,
    grey: Float[ArrayLike, " *spatial"],
    *,
    num_channels: int = 3,
    solver: str | diffrax.AbstractSolver = "euler_maruyama",
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    denoise: bool = False,
) -> Float[Array, " channels *spatial"]:
    r"""Colour a grey-scale image with a score model of channels-first colour images
    (Song et al. 2021, Appendix I.3).

    The grey value is the channel mean, $g = \frac1C \sum_c x_c$, a linear map of the
    colours. In the decoupled coordinates $u = Q x$ (per pixel, $Q$ the orthogonal
    [`sdegen.decoupling_matrix`][]) it fixes exactly one coordinate,
    $u_0 = \sqrt{C}\,g$, and the noise stays isotropic; so the sampler replaces $u_0$
    by $\alpha(t)\sqrt{C}\,g + \sigma(t) z$ after every update and by $\sqrt{C}\,g$
    at the end, leaving the other coordinates to the score. This is the projection
    method for $A = $ channel mean.

    **Arguments:**

    - `key`, `sde`, `score`: as [`sdegen.inpaint`][]; `score` acts on colour images
      of shape `(num_channels, *grey.shape)`.
    - `grey`: the grey-scale image (channel mean), shape `(H, W)` (any spatial shape).
    - `num_channels`: $C$, the colour channels of the data.
    - `solver`: the predictor, a name from [`sdegen.SOLVERS`][] (SDE-capable) or a
      diffrax solver; `"euler_maruyama"` is score_sde's reverse-diffusion predictor.
    - `num_steps`: uniform predictor steps from $T$ to `eps`.
    - `eps`: the last time $\varepsilon \in (0, T)$.
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.

    **Returns:** a colour image of shape `(num_channels, *grey.shape)` whose channel
    mean equals `grey`.

    **Raises:** `ValueError` for a non-finite `grey`, a bad `num_channels`, or an
    invalid sampler option.
    """
    grey = _check_obs(grey, "grey")
    q = decoupling_matrix(num_channels, grey.dtype)
    shape = (int(num_channels), *grey.shape)
    k, solver, csteps, ts, x_init = _prepare(
        key, sde, score, shape, solver, num_steps, eps, corrector_steps, snr, x_init,
        grey.dtype,
    )  # fmt: skip
    proj = _ColourProjection(grey.astype(x_init.dtype), q.astype(x_init.dtype))
    return _pc_loop(k, sde, score, x_init, ts, solver, csteps, snr, proj, denoise)


class DPSScore(eqx.Module):
    r"""The diffusion-posterior-sampling score (Chung et al. 2023)

    $$\tilde s(t, x) = s(t, x) - \gamma\,\nabla_x
    \frac{\lVert y - A\hat x_0(x)\rVert^2}{2 s^2},\qquad
    \hat x_0(x) = \frac{x + \sigma(t)^2 s(t, x)}{\alpha(t)},$$

    computed with one score evaluation and one vector–Jacobian product:
    $\nabla_x = \alpha(t)^{-1}(I + \sigma(t)^2 J_s^\top) A^\top (y - A\hat x_0)/s^2$.
    Build it with [`sdegen.dps_guidance`][].
    """

    score: Callable
    sde: AbstractSDE
    op: eqx.Module
    y: Array
    noise_std: RealScalarLike
    scale: RealScalarLike

    def __call__(self, t: RealScalarLike, x: Data) -> Data:
        x = jnp.asarray(x)
        s, vjp = jax.vjp(lambda x_: jnp.asarray(self.score(t, x_)).astype(x.dtype), x)
        a, sig = self.sde.alpha(t), self.sde.sigma(t)
        x0 = (x + sig**2 * s) / a
        v = self.op.transpose(self.y - self.op(x0)) / self.noise_std**2
        (jv,) = vjp(v.astype(x.dtype))
        grad = (v + sig**2 * jv) / a
        return (s + self.scale * grad).astype(x.dtype)


def dps_guidance(
    score: Any,
    sde: AbstractSDE,
    y: Float[ArrayLike, "*obs"],
    A: Any,
    noise_std: RealScalarLike,
    *,
    scale: RealScalarLike = 1.0,
    shape: tuple[int, ...] | None = None,
) -> DPSScore:
    r"""Turn an unconditional score into the approximate posterior score of diffusion
    posterior sampling for $y = A x_0 + n$, $n \sim \mathcal{N}(0, s^2 I)$ (Chung et
    al. 2023): $\nabla\log p_t(y \mid x_t) \approx \nabla_{x_t} \log
    \mathcal{N}(y;\ A\hat x_0(x_t),\ s^2 I)$ through Tweedie's estimate $\hat x_0$.

    The approximation replaces $p(x_0 \mid x_t)$ by a point mass at its mean; it is
    exact as $t \to 0$ and biased at large $t$ (too confident when $s$ is small,
    which `scale` < 1 tempers).

    **Arguments:**

    - `score`: the unconditional score `score(t, x)`.
    - `sde`: the forward SDE (for $\alpha(t)$, $\sigma(t)$).
    - `y`: the observation: shape `(m,)` for a matrix `A`, else `A`'s output shape.
    - `A`: an `(m, d)` matrix acting on the flattened example, or a linear function
      of one example.
    - `noise_std`: $s > 0$.
    - `scale`: the guidance scale $\gamma$.
    - `shape`: the shape of one example (required for a function `A`; `(d,)` by
      default for a matrix).

    **Returns:** a [`sdegen.DPSScore`][], a score `(t, x)`.

    **Raises:** `ValueError` for inconsistent shapes of `A`, `y` and `shape`, or
    `noise_std` $\le 0$.
    """
    _check_sde(sde)
    _check_score(score)
    check_positive("noise_std", noise_std)
    y = _check_obs(y, "y")
    op, _ = _as_operator(A, y, shape, check_rank=False)
    return DPSScore(score, sde, op, y, noise_std, scale)


def solve_inverse(
    key: KeyArray,
    sde: AbstractSDE,
    score: Any,
    y: Float[ArrayLike, "*obs"],
    A: Any,
    *,
    shape: tuple[int, ...] | None = None,
    noise_std: RealScalarLike = 0.0,
    method: str = "projection",
    scale: RealScalarLike = 1.0,
    solver: str | diffrax.AbstractSolver = "euler_maruyama",
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    denoise: bool = False,
) -> Data:
    r"""Sample $x_0$ given a linear observation $y = A x_0 + n$ with an unconditional
    score model.

    - `method="projection"` (needs `noise_std=0`): predictor–corrector sampling with
      the projection $x \leftarrow x + A^{+}(\alpha(t) y + \sigma(t) A z - A x)$ after
      every update and the exact projection onto $\{A x = y\}$ at the end (Song et al.
      2021, Appendix I; Song et al. 2022). $A^{+}$ is the pseudo-inverse for a matrix,
      and $A^\top (A A^\top)^{-1}$ by conjugate gradients (lineax) for a function.
    - `method="dps"` (needs `noise_std` $> 0$): the same sampler on the
      [`sdegen.dps_guidance`][] score, without projections (Chung et al. 2023).

    **Arguments:**

    - `key`, `sde`, `score`: as [`sdegen.inpaint`][].
    - `y`: the observation, shape `(m,)` for a matrix `A`, else `A`'s output shape.
    - `A`: an `(m, d)` matrix (full row rank for `"projection"`) acting on the
      flattened example, or a linear function of one example.
    - `shape`: one example's shape (required for a function `A`; `(d,)` by default).
    - `noise_std`: the observation noise $s$.
    - `method`: `"projection"` or `"dps"`.
    - `scale`: DPS guidance scale $\gamma$.
    - `solver`: the predictor, a name from [`sdegen.SOLVERS`][] (SDE-capable) or a
      diffrax solver; `"euler_maruyama"` is score_sde's reverse-diffusion predictor.
    - `num_steps`: uniform predictor steps from $T$ to `eps`.
    - `eps`: the last time $\varepsilon \in (0, T)$.
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.

    **Returns:** one sample of shape `shape`.

    **Raises:** `ValueError` for an unknown `method`, a `noise_std` that does not fit
    the method, `A` whose columns do not match `shape` or whose rows (or output
    shape) do not match `y`, a rank-deficient matrix for `"projection"`, or an
    invalid sampler option.
    """
    if method not in ("projection", "dps"):
        raise ValueError(f"`method` must be 'projection' or 'dps', got {method!r}.")
    check_positive("noise_std", noise_std, allow_zero=True)
    y = _check_obs(y, "y")
    if method == "projection":
        if is_concrete(noise_std) and float(noise_std) != 0.0:
            raise ValueError(
                "`method='projection'` needs a noiseless observation (noise_std=0); "
                f"got noise_std={float(noise_std)}. Use method='dps' for noisy y."
            )
        op, shape = _as_operator(A, y, shape)
        k, solver, csteps, ts, x_init = _prepare(
            key, sde, score, shape, solver, num_steps, eps, corrector_steps, snr,
            x_init, y.dtype,
        )  # fmt: skip
        proj = _LinearProjection(op, y.astype(x_init.dtype))
        return _pc_loop(k, sde, score, x_init, ts, solver, csteps, snr, proj, denoise)
    if is_concrete(noise_std) and float(noise_std) == 0.0:
        raise ValueError(
            "`method='dps'` needs noise_std > 0 (its likelihood is N(y; A x0, s^2 I)); "
            "use method='projection' for a noiseless observation."
        )
    guided = dps_guidance(score, sde, y, A, noise_std, scale=scale, shape=shape)
    k, solver, csteps, ts, x_init = _prepare(
        key, sde, guided, guided.op.shape, solver, num_steps, eps, corrector_steps, snr,
        x_init, y.dtype,
    )  # fmt: skip
    return _pc_loop(k, sde, guided, x_init, ts, solver, csteps, snr, None, denoise)


# ---------------------------------------------------------------- exact posterior


class MixturePosterior(eqx.Module):
    r"""The posterior $p(x_0 \mid y) = \sum_k \tilde w_k\,\mathcal{N}(\tilde\mu_k,
    \tilde\Sigma_k)$ of a Gaussian-mixture prior under a linear Gaussian observation,
    with possibly singular covariances (a noiseless observation pins $A x_0 = y$).

    Diffused by an SDE it stays a mixture, $p_t(x \mid y) = \sum_k \tilde w_k\,
    \mathcal{N}(\alpha(t)\tilde\mu_k,\ \alpha(t)^2\tilde\Sigma_k + \sigma(t)^2 I)$,
    so [`sdegen.MixturePosterior.score`][] is the exact conditional score for $t > 0$.
    Build it with [`sdegen.mixture_posterior`][].
    """

    means: Float[Array, "K d"]
    covs: Float[Array, "K d d"]
    weights: Float[Array, " K"]

    def sample(self, key: KeyArray, n: int) -> Float[Array, "n d"]:
        r"""`n` exact posterior draws (a component, then $\tilde\mu_k + \tilde
        \Sigma_k^{1/2} z$ with the symmetric square root, valid for singular
        $\tilde\Sigma_k$)."""
        if int(n) != n or n <= 0:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        kc, kz = jr.split(key)
        comp = jr.categorical(kc, jnp.log(self.weights), shape=(int(n),))
        evals, evecs = jnp.linalg.eigh(self.covs)
        root_evals = jnp.sqrt(jnp.maximum(evals, 0))
        roots = jnp.einsum("kij,kj,klj->kil", evecs, root_evals, evecs)
        z = jr.normal(kz, (int(n), self.means.shape[1]), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", roots[comp], z)

    def score(self, sde: AbstractSDE) -> "MixturePosteriorScore":
        r"""The exact score $\nabla_x \log p_t(x \mid y)$, as `score(t, x)`."""
        _check_sde(sde)
        return MixturePosteriorScore(self, sde)

    def mixture(self) -> GaussianMixture:
        r"""As a [`sdegen.data.GaussianMixture`][] (only when every $\tilde\Sigma_k$ is
        positive definite, i.e. for a noisy observation)."""
        return GaussianMixture(self.means, self.covs, self.weights)


class MixturePosteriorScore(eqx.Module):
    r"""Exact $\nabla_x \log p_t(x \mid y)$ of a [`sdegen.MixturePosterior`][]."""

    posterior: MixturePosterior
    sde: AbstractSDE

    def __call__(
        self, t: RealScalarLike, x: Float[ArrayLike, " d"]
    ) -> Float[Array, " d"]:
        p = self.posterior
        x = jnp.asarray(x)
        a, s = self.sde.alpha(t), self.sde.sigma(t)
        eye = jnp.eye(p.means.shape[1], dtype=p.covs.dtype)
        out = _mixture_score(a * p.means, a**2 * p.covs + s**2 * eye[None], p.weights,
                             x.astype(p.means.dtype))  # fmt: skip
        return out.astype(jnp.result_type(x, out))


def mixture_posterior(
    prior: GaussianMixture,
    y: Float[ArrayLike, " m"],
    A: Any = None,
    *,
    mask: Any = None,
    noise_std: RealScalarLike = 0.0,
) -> MixturePosterior:
    r"""The exact posterior of a Gaussian-mixture prior $\sum_k w_k\mathcal{N}(\mu_k,
    \Sigma_k)$ under $y = A x_0 + n$, $n \sim \mathcal{N}(0, s^2 I)$ (Bishop 2006,
    §2.3.3, per component):

    $$K_k = \Sigma_k A^\top (A\Sigma_k A^\top + s^2 I)^{-1},\quad
    \tilde\mu_k = \mu_k + K_k(y - A\mu_k),\quad \tilde\Sigma_k = \Sigma_k - K_k A
    \Sigma_k,$$

    $$\tilde w_k \propto w_k\,\mathcal{N}(y;\ A\mu_k,\ A\Sigma_k A^\top + s^2 I).$$

    The gain form holds for $s = 0$ too (then $\tilde\Sigma_k$ is singular).

    **Arguments:**

    - `prior`: a [`sdegen.data.GaussianMixture`][] in $\mathbb{R}^d$.
    - `y`: the observation, shape `(m,)`; with `mask`, shape `(d,)` (unobserved
      entries ignored).
    - `A`: an `(m, d)` matrix or a linear function of one point; or give `mask`.
    - `mask`: boolean (or 0/1) array of shape `(d,)`: inpainting, $A$ = the
      selection of the observed entries.
    - `noise_std`: $s \ge 0$.

    **Returns:** a [`sdegen.MixturePosterior`][].

    **Raises:** `ValueError` for inconsistent shapes, both or neither of `A` and
    `mask`, or a negative `noise_std`.
    """
    if not isinstance(prior, GaussianMixture):
        raise ValueError(
            "`prior` must be an sdegen.data.GaussianMixture, got "
            f"{type(prior).__name__}."
        )
    if (A is None) == (mask is None):
        raise ValueError("Give exactly one of `A` (a linear map) and `mask`.")
    check_positive("noise_std", noise_std, allow_zero=True)
    y = _check_obs(y, "y")
    d = prior.dim
    if mask is not None:
        m = np.asarray(_check_mask(mask, (d,)))
        if y.shape != (d,):
            raise ValueError(f"`y` must have shape ({d},) like `mask`, got {y.shape}.")
        A = np.eye(d)[m]
        y = y[m]
    op, _ = _as_operator(A, y, (d,), check_rank=float(noise_std) == 0.0)
    dtype = prior.means.dtype
    if isinstance(op, _MatrixOp):
        mat = op.matrix.astype(dtype)
    else:
        mat = jax.jacfwd(op.fn)(jnp.zeros((d,), dtype)).reshape(-1, d)
        y = y.reshape(-1)
    y = y.astype(dtype)
    noise_cov = noise_std**2 * jnp.eye(mat.shape[0], dtype=dtype)

    def one(mu, cov):
        s_yy = mat @ cov @ mat.T + noise_cov
        cho = jax.scipy.linalg.cho_factor(s_yy)
        gain = jax.scipy.linalg.cho_solve(cho, mat @ cov).T
        r = y - mat @ mu
        mean = mu + gain @ r
        post = cov - gain @ mat @ cov
        post = 0.5 * (post + post.T)
        loglik = (
            -0.5 * r @ jax.scipy.linalg.cho_solve(cho, r)
            - jnp.sum(jnp.log(jnp.diagonal(cho[0])))
            - 0.5 * r.shape[0] * math.log(2 * math.pi)
        )
        return mean, post, loglik

    means, covs, loglik = jax.vmap(one)(prior.means, prior.covs)
    weights = jax.nn.softmax(jnp.log(prior.weights) + loglik)
    return MixturePosterior(means, covs, weights)

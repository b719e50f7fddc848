r"""Annealed Langevin dynamics over a ladder of noise levels (Song & Ermon 2019,
"Generative Modeling by Estimating Gradients of the Data Distribution", Algorithm 1),
and the geometric sigma ladder of Song & Ermon 2020 ("Improved Techniques for Training
Score-Based Generative Models", Technique 1).

Annealed Langevin dynamics is corrector-only predictor–corrector sampling: the noise
level $\sigma$ is the time of the EDM SDE ($\sigma(t) = t$, [`sdegen.EDMSDE`][]), the
grid is the ladder, and the solver is
`PredictorCorrector(None, AnnealedLangevinCorrector(...))` on the one engine.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import (
    as_float_array,
    check_callable,
    check_int,
    check_positive,
    check_shape_arg,
    check_x_deferred,
    concrete_float,
    staged,
)
from .._core._custom_types import DataLike, KeyArray, RealScalarLike
from .._core._misc import default_float, is_concrete
from .._engine._solve import finish, outputs, solve_reverse, tweedie
from .._engine._solvers import AnnealedLangevinCorrector, PredictorCorrector
from .._processes._sde import EDMSDE


def _check_sigmas(sigmas) -> Array:
    sigmas = as_float_array(sigmas, "sigmas")
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(
            f"`sigmas` must be a 1-D array of at least one noise level, got shape "
            f"{sigmas.shape}."
        )
    if is_concrete(sigmas):
        a = np.asarray(sigmas, dtype=np.float64)
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"`sigmas` must be finite and > 0, got {a.tolist()}.")
        if np.any(np.diff(a) >= 0):
            raise ValueError(
                "`sigmas` must be strictly decreasing (largest noise level first), got "
                f"{a.tolist()}."
            )
        return sigmas
    ok = jnp.all(jnp.isfinite(sigmas) & (sigmas > 0)) & jnp.all(jnp.diff(sigmas) < 0)
    return staged(sigmas, ~ok, "`sigmas` must be finite, > 0 and strictly decreasing "
                  "(largest noise level first).")  # fmt: skip


def sigma_ladder(
    num_levels: int,
    sigma_min: RealScalarLike = 0.01,
    sigma_max: RealScalarLike | None = None,
    *,
    data: Float[ArrayLike, "n ..."] | None = None,
) -> Float[Array, " levels"]:
    r"""The decreasing geometric ladder of NCSN noise levels,
    $\sigma_i = \sigma_1 (\sigma_L/\sigma_1)^{(i-1)/(L-1)}$ for $i = 1, \dots, L$.

    Song & Ermon 2020 (Technique 1) take $\sigma_1$ about as large as the largest
    pairwise distance in the data, so that the noisiest level connects all modes; give
    `data` to set $\sigma_1 = \max_{j,k}\lVert x_j - x_k\rVert$, or give `sigma_max`.

    **Arguments:**

    - `num_levels`: the number $L \ge 1$ of levels ($L = 1$ gives `[sigma_max]`).
    - `sigma_min`: the smallest level $\sigma_L > 0$.
    - `sigma_max`: the largest level $\sigma_1 > \sigma_L$; exactly one of
      `sigma_max` and `data` must be given.
    - `data`: training examples, shape `(n, *data)` with $n \ge 2$; the pairwise
      distances are over all entries of an example ($O(n^2)$ time, $O(n)$ memory).

    **Returns:** the levels, shape `(num_levels,)`, largest first.
    """
    num_levels = check_int("num_levels", num_levels)
    if (sigma_max is None) == (data is None):
        raise ValueError("Give exactly one of `sigma_max` and `data`.")
    if data is not None:
        x = as_float_array(data, "data")
        if x.ndim < 2 or x.shape[0] < 2:
            raise ValueError(
                "`data` must have shape (n, *data) with n >= 2 examples, got "
                f"{x.shape}."
            )
        sigma_max = max_pairwise_distance(x)
    lo = concrete_float("sigma_min", sigma_min)
    hi = concrete_float("sigma_max", sigma_max)
    if lo is not None and not (math.isfinite(lo) and lo > 0):
        raise ValueError(f"`sigma_min` must be finite and > 0, got {lo}.")
    if lo is not None and hi is not None and not (math.isfinite(hi) and hi > lo):
        raise ValueError(
            f"`sigma_max` must be finite and greater than `sigma_min` = {lo}, got {hi}."
        )
    dtype = jnp.result_type(jnp.asarray(sigma_max), default_float())
    frac = jnp.linspace(0.0, 1.0, num_levels, dtype=dtype) if num_levels > 1 else (
        jnp.zeros((1,), dtype)
    )
    log_hi = jnp.log(jnp.asarray(sigma_max, dtype))
    log_lo = jnp.log(jnp.asarray(sigma_min, dtype))
    return jnp.exp(log_hi + frac * (log_lo - log_hi))


@jax.jit
def max_pairwise_distance(data: Float[Array, "n ..."]) -> Float[Array, ""]:
    r"""$\max_{j,k}\lVert x_j - x_k\rVert$ over the examples of `data` (flattened),
    one row at a time so that memory stays $O(n)$."""
    x = data.reshape(data.shape[0], -1)

    def row(xj):
        return jnp.max(jnp.sum((x - xj[None, :]) ** 2, axis=-1))

    return jnp.sqrt(jnp.max(lax.map(row, x)))


def annealed_langevin(
    key: KeyArray,
    score_sigma: Callable,
    sigmas: Float[ArrayLike, " levels"],
    shape: tuple[int, ...],
    *,
    steps_per_level: int = 100,
    step_lr: RealScalarLike = 2e-5,
    x_init: DataLike | None = None,
    args: Any = None,
    denoise: bool = False,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample by annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level $\sigma_i$ of the decreasing ladder $\sigma_1 > \dots > \sigma_L$,
    with step size $\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2$, run $T$ steps of

    $$x \leftarrow x + \tfrac{\alpha_i}{2}\, s(\sigma_i, x) + \sqrt{\alpha_i}\, z,
    \qquad z \sim \mathcal{N}(0, I),$$

    where $s(\sigma, x) \approx \nabla_x \log (p * \mathcal{N}(0, \sigma^2 I))(x)$ is a
    noise-conditional score. Large $\sigma$ fill the low-density regions between modes
    so that the chain can move mass between them; plain Langevin dynamics (a one-level
    ladder with a small $\sigma$) cannot, and keeps the mode proportions of its start.

    **Arguments:**

    - `key`: PRNG key (prior draw and Langevin noise).
    - `score_sigma`: a callable `score_sigma(sigma, x)` for one example.
    - `sigmas`: the strictly decreasing positive levels, shape `(L,)`; see
      [`sdegen.sigma_ladder`][].
    - `shape`: the shape of one sample.
    - `steps_per_level`: the number $T \ge 1$ of Langevin steps per level.
    - `step_lr`: $\epsilon > 0$, the step size at the last level.
    - `x_init`: the starting point (shape `shape`); by default a draw from
      $\mathcal{N}(0, \sigma_1^2 I)$ with `jax.random.split(key)[0]` (NCSN starts from
      uniform noise on images; the Gaussian is the SMLD prior and suits any data).
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `denoise`: finish with the denoising step $x + \sigma_L^2 s(\sigma_L, x)$
      (Tweedie's formula; Song & Ermon 2020, Appendix B.2).
    - `return_trajectory`: also return the state after each level, shape
      `(L + 1, *shape)`, starting with `x_init`.
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** the sample, then the trajectory and statistics if asked for.

    **Raises:** `ValueError` for a non-callable score, `sigmas` that are not 1-D,
    positive and strictly decreasing, non-positive `steps_per_level` or `step_lr`, a
    bad `shape`, or a wrongly shaped or non-finite `x_init`.

    Score evaluations: `L * steps_per_level` (+1 with `denoise`).
    """
    check_callable("score_sigma", score_sigma, "score_sigma(sigma, x) -> Array")
    shape = check_shape_arg("shape", shape)
    sigmas = _check_sigmas(sigmas)
    steps_per_level = check_int("steps_per_level", steps_per_level)
    step_lr = check_positive("step_lr", step_lr)
    dtype = default_float() if x_init is None else as_float_array(x_init, "x_init").dtype
    ts, above, last, prior, k_noise = _ladder_and_prior(
        key, sigmas.astype(dtype), shape if x_init is None else None)
    sde = EDMSDE(T=above)
    bad = False
    if x_init is None:
        x_init = prior
    else:
        x_init, bad = check_x_deferred(x_init, shape, "x_init")
    corrector = AnnealedLangevinCorrector(step_lr, last, steps_per_level)
    solver = PredictorCorrector(None, corrector)
    x, traj, stats = solve_reverse(k_noise, sde, score_sigma, x_init, solver,
                                   stochastic=True, ts=ts, args=args,
                                   save=return_trajectory)  # fmt: skip
    x = finish(x, stats, "annealed_langevin", throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, score_sigma, last, x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)


@eqx.filter_jit
def _ladder_and_prior(key, sigmas, shape):
    """`(ts, ts[0], sigma_L, prior draw (`None` without `shape`), noise key)`, in one
    compiled program. The chain starts at a nominal time above sigma_1 (the grid's
    first point): the corrector then runs at sigma_1, ..., sigma_L, one level per
    engine step."""
    above = sigmas[0] * (sigmas[0] / sigmas[1]) if sigmas.shape[0] > 1 else 2 * sigmas[0]
    ts = jnp.concatenate([above[None], sigmas])
    k_prior, k_noise = jr.split(key)
    prior = None if shape is None else sigmas[0] * jr.normal(k_prior, shape, sigmas.dtype)
    return ts, above, sigmas[-1], prior, k_noise

r"""Inpainting, colorization and linear inverse problems with an unconditional score.

The observation is linear, $y = A x_0 + n$ with $n \sim \mathcal{N}(0, s^2 I)$; we want
samples of $p(x_0 \mid y)$ using only a score model of $p_t(x)$. Two families:

- **Projection / consistency** (noiseless $y$; Song et al. 2021, "Score-Based
  Generative Modeling through Stochastic Differential Equations", Appendix I.2–I.3,
  and Song, Shen, Xing & Ermon 2022, "Solving Inverse Problems in Medical Imaging with
  Score-Based Generative Models"). A predictor–corrector sampler runs on the
  unconditional score; after every predictor and corrector update the part of $x_t$
  that the observation determines is replaced by a forward-noised observation
  (the projections of `_engine/_projections.py`), and the sample ends with the exact
  projection onto $\{A x = y\}$. As a solver this is
  `Projected(PredictorCorrector(Projected(predictor, P), corrector), P)` on the one
  engine.

  The method is an approximation: it samples the unknown part as if
  $p_t(x_\text{unknown} \mid x_\text{known} = \hat y_t)$ were $p_t(x_\text{unknown}
  \mid y)$, which ignores how $y$ should reweight the modes of the prior. With a
  multimodal prior the posterior mode weights come out biased (the tests measure it).

- **Diffusion posterior sampling** (noisy $y$; Chung et al. 2023): the same sampler
  on the score of [`sdegen.dps_guidance`][], without projections.

For a Gaussian-mixture prior the posterior is a Gaussian mixture in closed form, and
so is its diffused version: [`sdegen.mixture_posterior`][] gives the exact conditional
score, for tests and as the exact variant of every method here.
"""

from typing import Any

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import (
    check_choice,
    check_int,
    check_positive,
    check_score,
    describe,
    staged,
)
from .._core._custom_types import Data, DataLike, KeyArray, RealScalarLike
from .._core._misc import is_concrete
from .._engine._brownian import STREAM_PROJECT
from .._engine._grids import resolve_grid
from .._engine._projections import (
    ColourProjection,
    LinearProjection,
    MaskProjection,
    as_operator,
    check_mask,
    check_obs,
    decoupling_matrix,
)
from .._engine._solve import finish, outputs, solve_reverse, start, tweedie
from .._engine._solvers import LangevinCorrector, PredictorCorrector, Projected
from .._processes._sde import AbstractSDE, check_sde
from .._sampling._pc import resolve_predictor
from ._guidance import dps_guidance


def _projected(key, sde, score, shape, project, *, solver, num_steps, eps, grid, ts,
               corrector_steps, snr, x_init, args, denoise, return_stats, throw,
               where):  # fmt: skip
    """Predictor–corrector sampling with `project` after every update (none for
    `project=None`) and its exact form at the end."""
    check_sde(sde)
    check_score(score)
    num_steps = check_int("num_steps", num_steps)
    corrector_steps = check_int("corrector_steps", corrector_steps, minimum=0)
    snr = check_positive("snr", snr)
    predictor = resolve_predictor(solver)
    if predictor is None:
        raise ValueError("`solver` must be a solver of the reverse SDE, got None.")
    if project is not None:
        predictor = Projected(predictor, project, STREAM_PROJECT)
    step = predictor
    if corrector_steps > 0:
        step = PredictorCorrector(predictor, LangevinCorrector(snr, corrector_steps))
        if project is not None:
            step = Projected(step, project, STREAM_PROJECT + 1)
    x_init, k_noise, bad = start(key, sde, shape, x_init)
    grid_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=ts, eps=eps,
                           dtype=x_init.dtype)  # fmt: skip
    x, _, stats = solve_reverse(k_noise, sde, score, x_init, step, stochastic=True,
                                ts=grid_ts, args=args)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, score, grid_ts[-1], x, args)
    if project is not None:
        x = project.exact(x)
    return outputs(x, None, stats, False, return_stats)


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
    grid: str = "uniform",
    ts: Any = None,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    args: Any = None,
    denoise: bool = False,
    return_stats: bool = False,
    throw: bool = True,
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
    - `num_steps`, `eps`, `grid`, `ts`: the grid of predictor steps, as in
      [`sdegen.sample_sde`][] (uniform from $T$ to `eps` by default).
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** one sample of the data's shape, equal to `y` where `mask` is set.

    **Raises:** `ValueError` when `mask`'s shape differs from `y`'s, `mask` holds
    values other than 0/1, `y` is not finite, or a sampler option is invalid.
    """
    y = check_obs(y, "y")
    mask = check_mask(mask, y.shape)
    y = jnp.where(mask, y, 0.0)
    return _projected(key, sde, score, y.shape, MaskProjection(y, mask), solver=solver,
                      num_steps=num_steps, eps=eps, grid=grid, ts=ts,
                      corrector_steps=corrector_steps, snr=snr, x_init=x_init,
                      args=args, denoise=denoise, return_stats=return_stats,
                      throw=throw, where=describe("inpaint", solver))  # fmt: skip

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
    grid: str = "uniform",
    ts: Any = None,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    args: Any = None,
    denoise: bool = False,
    return_stats: bool = False,
    throw: bool = True,
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
    - `num_steps`, `eps`, `grid`, `ts`: the grid of predictor steps, as in
      [`sdegen.sample_sde`][] (uniform from $T$ to `eps` by default).
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** a colour image of shape `(num_channels, *grey.shape)` whose channel
    mean equals `grey`.

    **Raises:** `ValueError` for a non-finite `grey`, a bad `num_channels`, or an
    invalid sampler option.
    """
    grey = check_obs(grey, "grey")
    q = decoupling_matrix(num_channels, grey.dtype)
    shape = (int(num_channels), *grey.shape)
    return _projected(key, sde, score, shape, ColourProjection(grey, q), solver=solver,
                      num_steps=num_steps, eps=eps, grid=grid, ts=ts,
                      corrector_steps=corrector_steps, snr=snr, x_init=x_init,
                      args=args, denoise=denoise, return_stats=return_stats,
                      throw=throw, where=describe("colorize", solver))  # fmt: skip


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
    grid: str = "uniform",
    ts: Any = None,
    corrector_steps: int = 1,
    snr: RealScalarLike = 0.16,
    x_init: DataLike | None = None,
    args: Any = None,
    denoise: bool = False,
    return_stats: bool = False,
    throw: bool = True,
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
    - `num_steps`, `eps`, `grid`, `ts`: the grid of predictor steps, as in
      [`sdegen.sample_sde`][] (uniform from $T$ to `eps` by default).
    - `corrector_steps`: Langevin corrector steps per predictor step (0: none).
    - `snr`: the corrector's signal-to-noise ratio $r$.
    - `x_init`: the prior draw to start from (by default drawn from `key`).
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `denoise`: apply Tweedie's denoiser at $\varepsilon$ before the final
      projection.
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** one sample of shape `shape`.

    **Raises:** `ValueError` for an unknown `method`, a `noise_std` that does not fit
    the method, `A` whose columns do not match `shape` or whose rows (or output
    shape) do not match `y`, a rank-deficient matrix for `"projection"`, or an
    invalid sampler option.
    """
    check_choice("method", method, ("projection", "dps"))
    noise_std = check_positive("noise_std", noise_std, allow_zero=True)
    y = check_obs(y, "y")
    if not is_concrete(noise_std):  # staged on `y`, which every method uses
        ok = jnp.isfinite(noise_std) & (noise_std >= 0)
        y = staged(y, ~ok, "`noise_std` must be finite and >= 0.")
    options = dict(solver=solver, num_steps=num_steps, eps=eps, grid=grid, ts=ts,
                   corrector_steps=corrector_steps, snr=snr, x_init=x_init, args=args,
                   denoise=denoise, return_stats=return_stats, throw=throw,
                   where=describe(f"solve_inverse (method {method!r})", solver))  # fmt: skip
    if method == "projection":
        if is_concrete(noise_std) and float(noise_std) != 0.0:
            raise ValueError(
                "`method='projection'` needs a noiseless observation (noise_std=0); "
                f"got noise_std={float(noise_std)}. Use method='dps' for noisy y."
            )
        op, shape = as_operator(A, y, shape)
        return _projected(key, sde, score, shape, LinearProjection(op, y), **options)
    if is_concrete(noise_std) and float(noise_std) == 0.0:
        raise ValueError(
            "`method='dps'` needs noise_std > 0 (its likelihood is N(y; A x0, s^2 I)); "
            "use method='projection' for a noiseless observation."
        )
    guided = dps_guidance(score, sde, y, A, noise_std, scale=scale, shape=shape)
    return _projected(key, sde, guided, guided.op.shape, None, **options)

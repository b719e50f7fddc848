r"""Predictor–corrector sampling (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", §4.2 and Algorithms 1–3).

Each iteration moves the state one step down the time grid with a *predictor* (a
numerical step of the reverse-time SDE) and then fixes up the marginal at the new time
with a *corrector* (score-based MCMC that leaves $p_t$ invariant):

- predictors: [`sdegen.ReverseDiffusionPredictor`][], [`sdegen.AncestralPredictor`][],
  or any diffrax solver, wrapped as [`sdegen.SolverPredictor`][];
- correctors: [`sdegen.LangevinCorrector`][], or none.

Both are small Equinox modules: subclass [`sdegen.AbstractPredictor`][] or
[`sdegen.AbstractCorrector`][] to add one. Names are resolved once, in
[`sdegen.pc_sample`][], through the single table `PC_STEPS` (plus the solver names of
[`sdegen.SOLVERS`][]).
"""

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import diffrax
import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from ._checks import check_shape_arg, concrete_float
from ._custom_types import (
    Array,
    Data,
    DataLike,
    Float,
    KeyArray,
    RealScalarLike,
    Scalar,
)
from ._integrate import grid_brownian, levy_area_for
from ._misc import shape_dtype as _sds
from ._sample import _check_eps, _check_num_steps, _check_x, _tweedie
from ._sde import VESDE, VPSDE, AbstractSDE
from ._solver_table import SOLVERS, _normalise, solver as get_solver
from ._terms import _check_score, _check_sde, reverse_terms


# ---------------------------------------------------------------- predictors


class AbstractPredictor(eqx.Module):
    r"""One step of the reverse-time SDE from $t_0$ down to $t_1 < t_0$.

    The Brownian motion is a diffrax path in reversed time $u = T - t$, so that every
    predictor (and every diffrax solver) reads its noise from the same path: the
    increment over the step is `brownian.evaluate(T - t0, T - t1)`.
    """

    @abc.abstractmethod
    def step(
        self,
        sde: AbstractSDE,
        score: Callable,
        brownian: diffrax.AbstractPath,
        t0: Scalar,
        t1: Scalar,
        x: Data,
    ) -> Data:
        """**Returns:** the state at `t1` given the state `x` at `t0`."""

    @abc.abstractmethod
    def levy_area(self) -> type:
        """The Brownian increment type the step needs from the path."""


def _std_normal(sde, brownian, t0, t1):
    """The path's increment over the step, scaled to a standard normal $z$."""
    du = t0 - t1
    return brownian.evaluate(sde.T - t0, sde.T - t1) / jnp.sqrt(du)


class ReverseDiffusionPredictor(AbstractPredictor):
    r"""The reverse of the forward SDE's discretisation (Song et al. 2021, eq. 46,
    score_sde `ReverseDiffusionPredictor`). With $\Delta t = t_0 - t_1$,
    $f = f(x, t_0)\,\Delta t$ and $G = g(t_0)\sqrt{\Delta t}$,

    $$\bar x = x - f + G^2 s(t_0, x), \qquad x' = \bar x + G z,
    \quad z \sim \mathcal{N}(0, I).$$

    With this generic (Euler) discretisation of the forward SDE the step equals one
    Euler–Maruyama step of the reverse SDE. (score_sde replaces the generic form by the
    DDPM/SMLD discretisations for VP/VE; those are the
    [`sdegen.AncestralPredictor`][] here.)
    """

    def step(self, sde, score, brownian, t0, t1, x):
        dt = (t0 - t1).astype(x.dtype)
        z = _std_normal(sde, brownian, t0, t1)
        g = sde.diffusion(t0).astype(x.dtype)
        s = jnp.asarray(score(t0, x)).astype(x.dtype)
        x_mean = x - sde.drift(t0, x) * dt + g**2 * dt * s
        return x_mean + g * jnp.sqrt(dt) * z

    def levy_area(self):
        return diffrax.BrownianIncrement


class AncestralPredictor(AbstractPredictor):
    r"""Ancestral sampling of the discretised chain (Ho et al. 2020; Song & Ermon 2019;
    score_sde `AncestralSamplingPredictor`).

    - VP ([`sdegen.VPSDE`][]): the DDPM step with
      $\beta_i = 1 - \alpha(t_0)^2 / \alpha(t_1)^2 = 1 - e^{-\int_{t_1}^{t_0}\beta}$
      (the discrete $\beta$ whose cumulative product matches the SDE's marginals;
      $\approx \beta(t_0)\Delta t$, the first-order value score_sde uses):
      $\bar x = (x + \beta_i s(t_0, x)) / \sqrt{1 - \beta_i}$,
      $x' = \bar x + \sqrt{\beta_i}\, z$.
    - VE ([`sdegen.VESDE`][]): the SMLD step between $\sigma_i = \sigma(t_0)$ and
      $\sigma_{i-1} = \sigma(t_1)$:
      $\bar x = x + (\sigma_i^2 - \sigma_{i-1}^2)\, s(t_0, x)$,
      $x' = \bar x + \sqrt{\sigma_{i-1}^2(\sigma_i^2 - \sigma_{i-1}^2)/\sigma_i^2}\, z$.

    Other SDEs have no ancestral chain here; [`sdegen.pc_sample`][] rejects them.
    """

    def step(self, sde, score, brownian, t0, t1, x):
        z = _std_normal(sde, brownian, t0, t1)
        s = jnp.asarray(score(t0, x)).astype(x.dtype)
        if isinstance(sde, VPSDE):
            beta = _discrete_beta(sde, t0, t1).astype(x.dtype)
            x_mean = (x + beta * s) / jnp.sqrt(1 - beta)
            return x_mean + jnp.sqrt(beta) * z
        sig0 = sde.sigma(t0).astype(x.dtype)
        sig1 = sde.sigma(t1).astype(x.dtype)
        dvar = sig0**2 - sig1**2
        x_mean = x + dvar * s
        return x_mean + jnp.sqrt(sig1**2 * dvar / sig0**2) * z

    def levy_area(self):
        return diffrax.BrownianIncrement


def _discrete_beta(sde: VPSDE, t0, t1):
    r"""$1 - \alpha(t_0)^2/\alpha(t_1)^2 = -\mathrm{expm1}(-(B(t_0) - B(t_1)))$."""
    return -jnp.expm1(-(sde.integral_beta(t0) - sde.integral_beta(t1)))


class SolverPredictor(AbstractPredictor):
    r"""One step of a diffrax solver on [`sdegen.reverse_terms`][] written in reversed
    time $u = T - t$ (from $u_0 = T - t_0$ to $u_1 = T - t_1$).

    The solver state is re-initialised at every step, because the corrector changes
    the state between steps (so first-same-as-last caches would be stale).
    """

    solver: diffrax.AbstractSolver

    def step(self, sde, score, brownian, t0, t1, x):
        terms = reverse_terms(sde, score, brownian, reversed_time=True)
        u0 = (sde.T - t0).astype(x.dtype)
        u1 = (sde.T - t1).astype(x.dtype)
        state = self.solver.init(terms, u0, u1, x, None)
        x1, _, _, _, _ = self.solver.step(terms, u0, u1, x, None, state, False)
        return x1

    def levy_area(self):
        return levy_area_for(self.solver)


SolverPredictor.__init__.__doc__ = """**Arguments:**

- `solver`: any diffrax solver that can step an SDE (e.g. `diffrax.Euler()`,
  `diffrax.Heun()`, `diffrax.ShARK()`).
"""


# ---------------------------------------------------------------- correctors


class AbstractCorrector(eqx.Module):
    r"""MCMC steps that leave $p_t$ invariant, applied at time $t$ after the
    predictor's step from $t_{\text{prev}}$."""

    @abc.abstractmethod
    def correct(
        self,
        sde: AbstractSDE,
        score: Callable,
        t_prev: Scalar,
        t: Scalar,
        x: Data,
        key: KeyArray,
    ) -> Data:
        """**Returns:** the corrected state at `t`."""


class LangevinCorrector(AbstractCorrector):
    r"""Langevin MCMC with the signal-to-noise step size of Song et al. 2021
    (Algorithm 4; score_sde `LangevinCorrector`). Each of `n_steps` steps draws
    $z \sim \mathcal{N}(0, I)$ and sets

    $$\epsilon = 2\,a\,\Big(r\,\frac{\lVert z\rVert}{\lVert s(t, x)\rVert}\Big)^2,
    \qquad x \leftarrow x + \epsilon\, s(t, x) + \sqrt{2\epsilon}\, z,$$

    with $r$ the target signal-to-noise ratio `snr` and $a = 1 - \beta_i$ for the VP
    SDE ($\beta_i$ the discrete beta of the step just taken, see
    [`sdegen.AncestralPredictor`][]) and $a = 1$ otherwise (VE, sub-VP).

    score_sde averages both norms over the batch. sdegen is unbatched, so `step_rule`
    chooses what stands in for those averages:

    - `"gaussian"` (default): the norms' values for Gaussian noise of the current
      level, $\lVert z\rVert^2 = D$ and $\lVert s\rVert^2 = D/\sigma(t)^2$, so
      $\epsilon = 2 a r^2 \sigma(t)^2$: the large-$D$ limit of the batch rule,
      deterministic and stable in any dimension.
    - `"sample"`: the norms of this one sample. Close to the batch rule in high
      dimension, where $\lVert z\rVert$ and $\lVert s\rVert$ concentrate; in low
      dimension the step blows up wherever $\lVert s\rVert \approx 0$ (near modes
      and saddles): near a mode $\lVert s\rVert^2 \propto \chi^2_D$ and
      $\mathbb{E}[1/\chi^2_D] = \infty$ for $D \le 2$, so in 2-D it throws points out
      of the modes and makes samples worse than no corrector.

    A zero score gives a zero step.
    """

    snr: float = 0.16
    n_steps: int = 1
    step_rule: str = "gaussian"

    def __check_init__(self):
        v = concrete_float("snr", self.snr)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"`snr` must be finite and > 0, got {v}.")
        _check_num_steps(self.n_steps, "corrector_steps")
        if self.step_rule not in ("sample", "gaussian"):
            raise ValueError(
                f"`step_rule` must be 'sample' or 'gaussian', got {self.step_rule!r}."
            )

    def correct(self, sde, score, t_prev, t, x, key):
        if isinstance(sde, VPSDE):
            a = (1 - _discrete_beta(sde, t_prev, t)).astype(x.dtype)
        else:
            a = jnp.ones((), x.dtype)
        sig2 = (sde.sigma(t) ** 2).astype(x.dtype)

        def one(x, k):
            s = jnp.asarray(score(t, x)).astype(x.dtype)
            z = jr.normal(k, x.shape, x.dtype)
            if self.step_rule == "gaussian":
                step = 2 * a * self.snr**2 * sig2
            else:
                s_norm = jnp.sqrt(jnp.sum(s**2))
                z_norm = jnp.sqrt(jnp.sum(z**2))
                ratio = self.snr * z_norm / jnp.where(s_norm > 0, s_norm, 1.0)
                step = jnp.where(s_norm > 0, 2 * a * ratio**2, 0.0)
            return x + step * s + jnp.sqrt(2 * step) * z, None

        x, _ = lax.scan(one, x, jr.split(key, self.n_steps))
        return x


LangevinCorrector.__init__.__doc__ = """**Arguments:**

- `snr`: the target signal-to-noise ratio $r > 0$ (0.16 is score_sde's CIFAR-10
  VE value; smaller is gentler).
- `n_steps`: Langevin steps per noise level ($\\ge 1$).
- `step_rule`: `"sample"` or `"gaussian"` (see above).
"""


class NoCorrector(AbstractCorrector):
    """The identity: predictor-only sampling."""

    def correct(self, sde, score, t_prev, t, x, key):
        return x


# ---------------------------------------------------------------- the one table


@dataclass(frozen=True)
class PCStepInfo:
    """One row of `PC_STEPS`."""

    name: str
    kind: str
    """`"predictor"` or `"corrector"`."""
    make: Callable[..., Any]
    description: str


PC_STEPS: dict[str, PCStepInfo] = {
    i.name: i
    for i in (
        PCStepInfo("reverse_diffusion", "predictor",
                   lambda **kw: ReverseDiffusionPredictor(),
                   "Reverse of the forward SDE's Euler discretisation (1 call)."),
        PCStepInfo("ancestral", "predictor", lambda **kw: AncestralPredictor(),
                   "DDPM ancestral step (VP) or SMLD step (VE) (1 call)."),
        PCStepInfo("langevin", "corrector",
                   lambda snr, corrector_steps: LangevinCorrector(snr, corrector_steps),
                   "Langevin MCMC with signal-to-noise step size (1 call per step)."),
        PCStepInfo("none", "corrector", lambda **kw: NoCorrector(),
                   "No corrector: predictor-only sampling."),
    )
}  # fmt: skip
"""The names [`sdegen.pc_sample`][] accepts for `predictor` and `corrector`. Any SDE
solver name of [`sdegen.SOLVERS`][] is a predictor too."""


def _known(kind):
    names = [n for n, i in PC_STEPS.items() if i.kind == kind]
    if kind == "predictor":
        names = names + [n for n, i in SOLVERS.items() if i.sde]
        return ", ".join(names) + ", None"
    return ", ".join(names)


def _resolve_predictor(predictor) -> AbstractPredictor | None:
    if predictor is None or isinstance(predictor, AbstractPredictor):
        return predictor
    if isinstance(predictor, diffrax.AbstractSolver):
        return SolverPredictor(get_solver(predictor, kind="sde"))
    if isinstance(predictor, str):
        key = _normalise(predictor)
        info = PC_STEPS.get(key)
        if info is not None and info.kind == "predictor":
            return info.make()
        sinfo = SOLVERS.get(key)
        if sinfo is not None and sinfo.sde:
            return SolverPredictor(sinfo.make())
    raise ValueError(
        f"Unknown `predictor` {predictor!r}. Known predictors: {_known('predictor')}; "
        "or a diffrax.AbstractSolver or sdegen.AbstractPredictor instance."
    )


def _resolve_corrector(corrector, snr, corrector_steps) -> AbstractCorrector:
    if corrector is None:
        return NoCorrector()
    if isinstance(corrector, AbstractCorrector):
        return corrector
    if isinstance(corrector, str):
        info = PC_STEPS.get(_normalise(corrector))
        if info is not None and info.kind == "corrector":
            return info.make(snr=snr, corrector_steps=corrector_steps)
    raise ValueError(
        f"Unknown `corrector` {corrector!r}. Known correctors: {_known('corrector')} "
        "(or None); or an sdegen.AbstractCorrector instance."
    )


# ---------------------------------------------------------------- the sampler


@eqx.filter_jit
def _pc_loop(key_path, key_corr, sde, score, x_init, ts, predictor, corrector, save):
    levy = diffrax.BrownianIncrement if predictor is None else predictor.levy_area()
    brownian = grid_brownian((sde.T - ts).astype(x_init.dtype), _sds(x_init), key_path,
                             levy)  # fmt: skip

    def body(x, inp):
        t0, t1, k = inp
        if predictor is not None:
            x = predictor.step(sde, score, brownian, t0, t1, x)
        x = corrector.correct(sde, score, t0, t1, x, k)
        return x, (x if save else None)

    keys = jr.split(key_corr, ts.shape[0] - 1)
    x, xs = lax.scan(body, x_init, (ts[:-1], ts[1:], keys))
    if save:
        xs = jnp.concatenate([x_init[None], xs], axis=0)
    return x, xs


def pc_sample(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    predictor: str | diffrax.AbstractSolver | AbstractPredictor | None = (
        "reverse_diffusion"
    ),
    corrector: str | AbstractCorrector | None = "langevin",
    snr: RealScalarLike = 0.16,
    corrector_steps: int = 1,
    num_steps: int = 1000,
    *,
    eps: RealScalarLike = 1e-3,
    x_init: DataLike | None = None,
    denoise: bool = False,
    return_trajectory: bool = False,
) -> Data | tuple[Data, Float[Array, "steps ..."]]:
    r"""Draw one sample by predictor–corrector sampling (Song et al. 2021,
    Algorithm 1): from $x_0 \sim p_T$ at $t_0 = T$, for $i = 0, \dots, N-1$,

    1. predictor: one step of the reverse-time SDE from $t_i$ to $t_{i+1}$;
    2. corrector: `corrector_steps` Langevin steps targeting $p_{t_{i+1}}$;

    on the uniform grid $t_i = T - i\,(T - \varepsilon)/N$, i.e.
    `linspace(T, eps, num_steps + 1)`, so each predictor step has
    $\Delta t = (T - \varepsilon)/N$ and the last corrector acts at $\varepsilon$.
    (score_sde iterates over `linspace(T, eps, N)` with steps of $T/N$, running the
    corrector before the predictor at each point, so its last predictor step
    overshoots $\varepsilon$; the grid here is the paper's Algorithm 1 and the grid of
    [`sdegen.sample_sde`][]: with `corrector="none"` and predictor
    `"euler_maruyama"`, this function returns the same sample as `sample_sde` for the
    same key.) The whole loop is one jitted `lax.scan`.

    **Arguments:**

    - `key`: PRNG key (prior draw, Brownian path and corrector noise all come from it).
    - `sde`: an [`sdegen.AbstractSDE`][].
    - `score`: a callable `score(t, x)` for one example.
    - `shape`: the shape of one sample.
    - `predictor`: `"reverse_diffusion"`, `"ancestral"` (VP or VE only), any SDE
      solver name of [`sdegen.SOLVERS`][], a diffrax solver instance, an
      [`sdegen.AbstractPredictor`][], or `None` for corrector-only sampling.
    - `corrector`: `"langevin"` (`LangevinCorrector(snr, corrector_steps)`, whose
      default step rule is `"gaussian"`; pass
      `LangevinCorrector(snr, n, step_rule="sample")` for score_sde's norm ratio),
      `"none"` (or `None`), or an [`sdegen.AbstractCorrector`][] (its own settings
      are then used).
    - `snr`: the Langevin corrector's target signal-to-noise ratio $r > 0$.
    - `corrector_steps`: Langevin steps per noise level ($\ge 1$).
    - `num_steps`: the number $N$ of predictor steps (noise levels).
    - `eps`: the final time $\varepsilon \in (0, T)$.
    - `x_init`: the prior draw to start from (shape `shape`); by default
      `sde.prior_sample(jax.random.split(key)[0], shape)`, as in `sample_sde`.
    - `denoise`: finish with Tweedie's denoiser
      $(x + \sigma(\varepsilon)^2 s(\varepsilon, x)) / \alpha(\varepsilon)$.
    - `return_trajectory`: also return the `num_steps + 1` states on the grid
      (after each predictor–corrector iteration, starting with `x_init`).

    **Returns:** the sample (shape `shape`), or `(sample, trajectory)`.

    **Raises:** `ValueError` for an unknown predictor/corrector name (listing the known
    ones), `predictor=None` with no corrector, `"ancestral"` on an SDE other than VP
    or VE, `snr <= 0`, non-positive step counts, `eps` outside $(0, T)$, a bad `shape`,
    or a wrongly shaped or non-finite `x_init`.

    Score evaluations: $N$ (`reverse_diffusion`, `ancestral`) or $N$ times the solver's
    stages, plus $N \times$ `corrector_steps` for the Langevin corrector.
    """
    _check_sde(sde)
    _check_score(score)
    shape = check_shape_arg("shape", shape)
    num_steps = _check_num_steps(num_steps)
    corrector_steps = _check_num_steps(corrector_steps, "corrector_steps")
    v = concrete_float("snr", snr)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"`snr` must be finite and > 0, got {v}.")
    _check_eps(sde, eps)
    pred = _resolve_predictor(predictor)
    corr = _resolve_corrector(corrector, snr, corrector_steps)
    if pred is None and isinstance(corr, NoCorrector):
        raise ValueError(
            "`predictor=None` needs a corrector (corrector-only sampling); got no "
            "corrector either, so there is nothing to do."
        )
    if isinstance(pred, AncestralPredictor) and not isinstance(sde, (VPSDE, VESDE)):
        raise ValueError(
            "`predictor='ancestral'` needs an sdegen.VPSDE (DDPM step) or sdegen.VESDE "
            f"(SMLD step), got {type(sde).__name__}; use 'reverse_diffusion' instead."
        )
    k_prior, k_path = jr.split(key)
    k_corr = jr.fold_in(key, 1)
    if x_init is None:
        x_init = sde.prior_sample(k_prior, shape)
    else:
        x_init = _check_x(x_init, shape, "x_init")
    ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x_init.dtype)
    x, traj = _pc_loop(k_path, k_corr, sde, score, x_init, ts, pred, corr,
                       return_trajectory)  # fmt: skip
    if denoise:
        x = _tweedie(sde, score, ts[-1], x)
    return (x, traj) if return_trajectory else x

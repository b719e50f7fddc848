r"""DDIM and DDPM sampling of discrete noise-prediction models, as solvers on the one
engine.

A DDPM chain with $\bar\alpha_0 > \dots > \bar\alpha_{N-1}$ is a VP SDE on
$t \in [0, N]$ whose marginals at the integer times $t = n + 1$ are the chain's
([`sdegen.DiscreteVPSDE`][]: $\log\alpha$ piecewise linear, so $\beta(t)$ is piecewise
constant), with clean data at $t = 0$. A noise predictor `eps_model(n, x)` is the score
$s(n + 1, x) = -\epsilon(n, x)/\sigma(n + 1)$ ([`sdegen.EpsScore`][]). Then

- DDIM (Song, Meng & Ermon 2021) is the solver [`sdegen.DDIM`][]`(eta)` on the grid
  $t = \tau_i + 1$ of its skip schedule and a last step to $t = 0$;
- DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) is [`sdegen.Ancestral`][] on
  $t = N, N-1, \dots, 0$.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import (
    as_float_array,
    check_callable,
    check_int,
    check_positive,
    check_shape_arg,
    concrete_float,
    staged,
)
from .._core._custom_types import Data, DataLike, KeyArray, RealScalarLike
from .._core._misc import is_concrete
from .._engine._solve import finish, outputs, solve_reverse, start
from .._engine._solver_table import lookup
from .._engine._solvers import DDIM, Ancestral
from .._processes._sde import AbstractSDE
from .._processes._sde_custom import bisect_decreasing


class DiscreteVPSDE(AbstractSDE):
    r"""The VP SDE of a discrete DDPM chain $\bar\alpha_0 > \dots > \bar\alpha_{N-1}$:
    $T = N$, $\alpha(n + 1)^2 = \bar\alpha_n$ at the integer times, $\alpha(0) = 1$,
    $\log\alpha$ linear in between (so $\beta(t) = -2\,\mathrm{d}\log\alpha/\mathrm{d}t$
    is piecewise constant) and $\sigma = \sqrt{1 - \alpha^2}$. Prior
    $\mathcal{N}(0, I)$.
    """

    log_alpha: Float[Array, " N_plus_1"]
    T: float = eqx.field(static=True)

    def __init__(self, alphas_cumprod: Float[ArrayLike, " N"]):
        abar = _check_alphas_cumprod(alphas_cumprod)
        self.log_alpha = _log_alpha(abar)
        self.T = float(abar.shape[0])

    def _segment(self, t):
        n = self.log_alpha.shape[0] - 1
        k = jnp.clip(jnp.floor(t), 0, n - 1).astype(jnp.int32)
        return k, self.log_alpha[k + 1] - self.log_alpha[k]

    def _log_alpha_at(self, t):
        k, slope = self._segment(t)
        return self.log_alpha[k] + (t - k) * slope

    def _alpha(self, t):
        return jnp.exp(self._log_alpha_at(t))

    def _sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2 * self._log_alpha_at(t)))

    def _f(self, t):
        return self._segment(t)[1]

    def _g2(self, t):
        return -2 * self._segment(t)[1]

    def _inverse_lambda(self, lam):
        return bisect_decreasing(self._lambda, lam, 0.0, self.T)

    @property
    def prior_std(self) -> float:
        return 1.0


@eqx.filter_jit
def _log_alpha(abar):
    # Compiled: eagerly one program, not one per operation.
    return jnp.concatenate([jnp.zeros((1,), abar.dtype), 0.5 * jnp.log(abar)])


DiscreteVPSDE.__init__.__doc__ = r"""**Arguments:**

- `alphas_cumprod`: $\bar\alpha_0 > \dots > \bar\alpha_{N-1}$ in $(0, 1]$.
"""


class EpsScore(eqx.Module):
    r"""A noise-prediction model `eps_model(n, x)` of a DDPM chain as the score of its
    [`sdegen.DiscreteVPSDE`][]: $s(t, x) = -\epsilon(n, x)/\sigma(t)$ with the step
    $n = t - 1$ (the score is only called at the integer times $t = n + 1$)."""

    eps_model: Callable
    sde: DiscreteVPSDE

    def __call__(self, t: Any, x: Data, *args: Any, **kwargs: Any) -> Data:
        n = jnp.round(t).astype(jnp.int32) - 1
        eps = jnp.asarray(self.eps_model(n, x, *args, **kwargs))
        if eps.shape != jnp.shape(x):
            raise ValueError(
                f"`eps_model(n, x)` must return an array of the state's shape "
                f"{jnp.shape(x)} (one unbatched example), got shape {eps.shape}."
            )
        return (-eps / self.sde._sigma(t)).astype(jnp.result_type(x))


# ---------------------------------------------------------------- validation


def _check_betas(betas) -> Array:
    betas = as_float_array(betas, "betas")
    if betas.ndim != 1 or betas.shape[0] < 1:
        raise ValueError(f"`betas` must be a 1-D array, got shape {betas.shape}.")
    if is_concrete(betas):
        b = np.asarray(betas, dtype=np.float64)
        if not np.all(np.isfinite(b)) or np.any(b <= 0) or np.any(b >= 1):
            raise ValueError(
                f"`betas` must all lie in (0, 1), got range [{b.min()}, {b.max()}]."
            )
        return betas
    ok = jnp.all(jnp.isfinite(betas) & (betas > 0) & (betas < 1))
    return staged(betas, ~ok, "`betas` must all lie in (0, 1).")


def _check_alphas_cumprod(a) -> Array:
    a = as_float_array(a, "alphas_cumprod")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"`alphas_cumprod` must be a 1-D array, got shape {a.shape}.")
    if is_concrete(a):
        v = np.asarray(a, dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(v > 1):
            raise ValueError(
                "`alphas_cumprod` must all lie in (0, 1], got range "
                f"[{v.min()}, {v.max()}]."
            )
        if np.any(np.diff(v) >= 0):
            raise ValueError(
                "`alphas_cumprod` must be strictly decreasing (alpha-bar of steps "
                "0, 1, ..., N-1)."
            )
        return a
    ok = jnp.all(jnp.isfinite(a) & (a > 0) & (a <= 1)) & jnp.all(jnp.diff(a) < 0)
    return staged(a, ~ok, "`alphas_cumprod` must lie in (0, 1] and be strictly "
                  "decreasing (alpha-bar of steps 0, 1, ..., N-1).")  # fmt: skip


@eqx.filter_jit
def _alphas_cumprod(betas):
    return jnp.exp(jnp.cumsum(jnp.log1p(-betas)))


def _run(key, eps_model, abar, shape, steps, solver, stochastic, x_init, args,
         return_trajectory, return_stats, throw, where):  # fmt: skip
    """Run `solver` from step `steps[0]` through `steps[1:]` and on to clean data."""
    check_callable("eps_model", eps_model, "eps_model(n, x) -> Array")
    shape = check_shape_arg("shape", shape)
    sde = DiscreteVPSDE(abar)
    x_init, k_noise, bad = start(key, sde, shape, x_init)
    # the steps' times n + 1, then 0 (computed on the host: `steps` is a NumPy array)
    ts = jnp.asarray(np.append(np.asarray(steps) + 1, 0).astype(x_init.dtype))
    x, traj, stats = solve_reverse(k_noise, sde, EpsScore(eps_model, sde), x_init, solver,
                                   stochastic=stochastic, ts=ts, args=args,
                                   save=return_trajectory)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    return outputs(x, traj, stats, return_trajectory, return_stats)


def ddim_sample(
    key: KeyArray,
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    shape: tuple[int, ...],
    *,
    num_steps: int = 50,
    eta: RealScalarLike = 0.0,
    x_init: DataLike | None = None,
    args: Any = None,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample with DDIM (Song, Meng & Ermon 2021, eq. 12).

    On the uniform skip schedule $\tau = ((S-1)c, \dots, c, 0)$ with
    $c = \lfloor N / S\rfloor$ ($S$ = `num_steps`), each update from $n = \tau_i$ to
    $m = \tau_{i+1}$ (and from $n = 0$ to $m = -1$, $\bar\alpha_{-1} = 1$, last) is

    $$\hat x_0 = \frac{x - \sqrt{1 - \bar\alpha_n}\,\epsilon(n, x)}
    {\sqrt{\bar\alpha_n}},\quad x' = \sqrt{\bar\alpha_m}\,\hat x_0
    + \sqrt{1 - \bar\alpha_m - \sigma^2}\,\epsilon(n, x) + \sigma z,$$

    $$\sigma = \eta\sqrt{\frac{1 - \bar\alpha_m}{1 - \bar\alpha_n}}
    \sqrt{1 - \frac{\bar\alpha_n}{\bar\alpha_m}}.$$

    This is the solver [`sdegen.DDIM`][]`(eta)` (DPM-Solver++(1) for $\eta = 0$) on the
    [`sdegen.DiscreteVPSDE`][] of the chain. $\eta = 0$ is deterministic; $\eta = 1$
    with $S = N$ is DDPM ancestral sampling with variance $\tilde\beta_n$. The last
    update returns $\hat x_0$.

    **Arguments:**

    - `key`: PRNG key (prior draw and step noise).
    - `eps_model`: a callable `eps_model(n, x)` with the integer step $n \in [0, N)$.
    - `alphas_cumprod`: $\bar\alpha_0 > \dots > \bar\alpha_{N-1}$ in $(0, 1]$.
    - `shape`: the shape of one sample.
    - `num_steps`: $S$, with $1 \le S \le N$.
    - `eta`: $\eta \ge 0$.
    - `x_init`: the sample at the first step of the schedule, $(S-1)c$; by default a
      draw from $\mathcal{N}(0, I)$ with `jax.random.split(key)[0]`.
    - `args`: passed to the model as `eps_model(n, x, **args)` (a dict).
    - `return_trajectory`: also return the $S + 1$ states (starting with `x_init`).
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** the sample, then the trajectory and statistics if asked for.

    **Raises:** `ValueError` for a non-callable model, `alphas_cumprod` not in
    $(0, 1]$ and strictly decreasing, `num_steps` outside $[1, N]$, `eta < 0`, a bad
    `shape`, or a wrongly shaped or non-finite `x_init`.
    """
    abar = _check_alphas_cumprod(alphas_cumprod)
    num_steps = check_int("num_steps", num_steps)
    n_total = abar.shape[0]
    if num_steps > n_total:
        raise ValueError(
            f"`num_steps` must be at most len(alphas_cumprod) = {n_total}, got "
            f"{num_steps}."
        )
    e = concrete_float("eta", eta)
    if e is not None and not (math.isfinite(e) and e >= 0):
        raise ValueError(f"`eta` must be finite and >= 0, got {e}.")
    if e is None:
        eta = check_positive("eta", eta, allow_zero=True)  # staged
    c = n_total // num_steps
    steps = np.arange(num_steps - 1, -1, -1) * c
    stochastic = e is None or e > 0
    return _run(key, eps_model, abar, shape, steps, DDIM(eta), stochastic, x_init, args,
                return_trajectory, return_stats, throw, "ddim_sample")  # fmt: skip


def ddpm_sample(
    key: KeyArray,
    eps_model: Callable,
    betas: Float[ArrayLike, " N"],
    shape: tuple[int, ...],
    *,
    variance: str = "beta",
    x_init: DataLike | None = None,
    args: Any = None,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample by DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): from
    $x_{N-1} \sim \mathcal{N}(0, I)$, for $n = N-1, \dots, 0$,

    $$x_{n-1} = \frac{1}{\sqrt{1 - \beta_n}}\Big(x_n - \frac{\beta_n}
    {\sqrt{1 - \bar\alpha_n}}\,\epsilon(n, x_n)\Big) + \sigma_n z,
    \qquad z \sim \mathcal{N}(0, I),$$

    with no noise at the last step ($\sigma_0 = 0$): the solver
    [`sdegen.Ancestral`][] on the [`sdegen.DiscreteVPSDE`][] of the chain. It costs
    $N$ model calls.

    **Arguments:**

    - `key`: PRNG key (prior draw and step noise).
    - `eps_model`: a callable `eps_model(n, x)` with the integer step $n \in [0, N)$.
    - `betas`: $\beta_0, \dots, \beta_{N-1}$ in $(0, 1)$, e.g.
      [`sdegen.linear_beta_schedule`][] or [`sdegen.cosine_beta_schedule`][].
    - `shape`: the shape of one sample.
    - `variance`: `"beta"` for $\sigma_n^2 = \beta_n$ or `"beta_tilde"` for the
      posterior variance $\tilde\beta_n = \frac{1 - \bar\alpha_{n-1}}{1 - \bar\alpha_n}
      \beta_n$ (Ho et al. §3.2: both give similar results).
    - `x_init`: the draw $x_{N-1}$ to start from; by default from $\mathcal{N}(0, I)$
      with `jax.random.split(key)[0]`.
    - `args`: passed to the model as `eps_model(n, x, **args)` (a dict).
    - `return_trajectory`: also return the $N + 1$ states (starting with `x_init`).
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** the sample, then the trajectory and statistics if asked for.

    **Raises:** `ValueError` for a non-callable model, `betas` outside $(0, 1)$ or not
    1-D, an unknown `variance`, a bad `shape`, or a wrongly shaped or non-finite
    `x_init`.
    """
    betas = _check_betas(betas)
    kind = lookup("variance", variance, arg="variance").make()
    abar = _alphas_cumprod(betas)
    steps = np.arange(betas.shape[0] - 1, -1, -1)
    return _run(key, eps_model, abar, shape, steps, Ancestral(kind), True, x_init, args,
                return_trajectory, return_stats, throw, "ddpm_sample")  # fmt: skip

r"""Discrete-time samplers for noise-prediction models: DDPM ancestral sampling (Ho et
al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2) and DDIM (Song,
Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), the linear and cosine $\beta$
schedules, and the bridge from a continuous-time VP score model to them.

Notation: $N$ steps $n = 0, \dots, N-1$ with $\beta_n \in (0, 1)$,
$\bar\alpha_n = \prod_{m \le n} (1 - \beta_m)$ and the convention $\bar\alpha_{-1} = 1$
(clean data). The forward chain has $x_n = \sqrt{\bar\alpha_n}\, x_{-1} +
\sqrt{1 - \bar\alpha_n}\,\epsilon$, and a model `eps_model(n, x)` predicts $\epsilon$
from $x_n$ (with the integer step $n$, 0-based: Ho et al.'s $t = n + 1$).
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._checks import as_float_array, check_shape_arg, concrete_float
from ._custom_types import Data, DataLike, KeyArray, RealScalarLike
from ._misc import default_float, is_concrete
from ._sample import _check_num_steps, _check_x
from ._sde import AbstractSDE
from ._terms import _check_sde


# ---------------------------------------------------------------- schedules


def linear_beta_schedule(
    num_timesteps: int,
    beta_start: RealScalarLike = 1e-4,
    beta_end: RealScalarLike = 2e-2,
) -> Float[Array, " num_timesteps"]:
    r"""The linear schedule of Ho et al. 2020, $\beta_n$ evenly spaced from
    `beta_start` to `beta_end` (defaults $10^{-4}$ and $0.02$ for $N = 1000$).

    **Returns:** $\beta$, shape `(num_timesteps,)`, in JAX's default float dtype.
    """
    n = _check_num_steps(num_timesteps, "num_timesteps")
    lo = concrete_float("beta_start", beta_start)
    hi = concrete_float("beta_end", beta_end)
    for name, v in (("beta_start", lo), ("beta_end", hi)):
        if v is not None and not (0 < v < 1):
            raise ValueError(f"`{name}` must lie in (0, 1), got {v}.")
    return jnp.linspace(beta_start, beta_end, n, dtype=default_float())


def cosine_beta_schedule(
    num_timesteps: int, s: RealScalarLike = 0.008, max_beta: RealScalarLike = 0.999
) -> Float[Array, " num_timesteps"]:
    r"""The cosine schedule of Nichol & Dhariwal 2021 ("Improved Denoising Diffusion
    Probabilistic Models", eq. 17): $\bar\alpha(u) = f(u)/f(0)$ with
    $f(u) = \cos^2\!\big(\tfrac{u/N + s}{1 + s}\cdot\tfrac{\pi}{2}\big)$, and
    $\beta_n = \min\big(1 - \bar\alpha(n+1)/\bar\alpha(n),\ \text{max\_beta}\big)$.

    **Returns:** $\beta$, shape `(num_timesteps,)`, clipped at `max_beta` (0.999).
    """
    n = _check_num_steps(num_timesteps, "num_timesteps")
    sv = concrete_float("s", s)
    if sv is not None and not (math.isfinite(sv) and sv >= 0):
        raise ValueError(f"`s` must be finite and >= 0, got {sv}.")
    mb = concrete_float("max_beta", max_beta)
    if mb is not None and not (0 < mb < 1):
        raise ValueError(f"`max_beta` must lie in (0, 1), got {mb}.")
    u = jnp.arange(n + 1, dtype=default_float()) / n
    f = jnp.cos((u + s) / (1 + s) * (math.pi / 2)) ** 2
    return jnp.minimum(1 - f[1:] / f[:-1], max_beta)


# ---------------------------------------------------------------- the VP bridge


def _check_vp(sde: AbstractSDE) -> None:
    _check_sde(sde)
    t = 0.5 * sde.T
    a, s = sde.alpha(t), sde.sigma(t)
    if is_concrete(a) and abs(float(a**2 + s**2) - 1.0) > 1e-6:
        raise ValueError(
            "`sde` must be variance-preserving (alpha(t)^2 + sigma(t)^2 = 1, e.g. "
            f"sdegen.VPSDE) for the DDPM/DDIM bridge, got {type(sde).__name__}."
        )


def _vp_times(sde: AbstractSDE, num_timesteps: int):
    n = jnp.arange(num_timesteps, dtype=default_float())
    return (n + 1) * (sde.T / num_timesteps)


def vp_alphas_cumprod(sde: AbstractSDE, num_timesteps: int) -> Float[Array, " N"]:
    r"""$\bar\alpha_n = \alpha(t_n)^2$ with $t_n = (n + 1)\,T / N$, the discrete chain
    whose marginals are those of a VP-type SDE (`sde.alpha(t)^2 + sde.sigma(t)^2 = 1`,
    e.g. [`sdegen.VPSDE`][]) on the grid $t_0 = T/N, \dots, t_{N-1} = T$; step
    $n = -1$ is $t = 0$ ($\bar\alpha = 1$). With [`sdegen.vp_eps_model`][], DDIM
    ($\eta = 0$) on these values is a first-order discretisation of the same
    probability-flow ODE that [`sdegen.sample_ode`][] solves.

    **Returns:** $\bar\alpha$, shape `(num_timesteps,)`, decreasing.
    """
    _check_vp(sde)
    n = _check_num_steps(num_timesteps, "num_timesteps")
    return jax.vmap(sde.alpha)(_vp_times(sde, n)) ** 2


def vp_betas(sde: AbstractSDE, num_timesteps: int) -> Float[Array, " N"]:
    r"""$\beta_n = 1 - \bar\alpha_n / \bar\alpha_{n-1}$ for the $\bar\alpha$ of
    [`sdegen.vp_alphas_cumprod`][] ($\bar\alpha_{-1} = 1$), for
    [`sdegen.ddpm_sample`][] on a continuous VP model.

    **Returns:** $\beta$, shape `(num_timesteps,)`.
    """
    _check_vp(sde)
    n = _check_num_steps(num_timesteps, "num_timesteps")
    t = _vp_times(sde, n)
    t_prev = jnp.concatenate([jnp.zeros((1,), t.dtype), t[:-1]])
    # 1 - alpha(t)^2 / alpha(t_prev)^2 = -expm1(2 log alpha(t) - 2 log alpha(t_prev))
    alpha = jax.vmap(sde.alpha)
    return -jnp.expm1(2 * (jnp.log(alpha(t)) - jnp.log(alpha(t_prev))))


class VPEpsModel(eqx.Module):
    r"""A continuous-time score model seen as a DDPM noise-prediction model:
    $\epsilon(n, x) = -\sigma(t_n)\, s(t_n, x)$ with $t_n = (n + 1)\,T / N$ (the exact
    relation $\nabla\log p_t(x) = -\mathbb{E}[\epsilon \mid x_t = x]/\sigma(t)$).
    Pair it with [`sdegen.vp_alphas_cumprod`][] / [`sdegen.vp_betas`][]."""

    score: Callable
    sde: AbstractSDE
    num_timesteps: int = eqx.field(static=True)

    def __call__(self, n: Int[ArrayLike, ""], x: Data) -> Data:
        t = (jnp.asarray(n) + 1).astype(jnp.result_type(x)) * (
            self.sde.T / self.num_timesteps
        )
        return (-self.sde.sigma(t) * jnp.asarray(self.score(t, x))).astype(x.dtype)


def vp_eps_model(score: Callable, sde: AbstractSDE, num_timesteps: int) -> VPEpsModel:
    r"""The bridge from a continuous VP score model `score(t, x)` to an
    `eps_model(n, x)` for [`sdegen.ddpm_sample`][] and [`sdegen.ddim_sample`][]:
    $\epsilon(n, x) = -\sigma(t_n)\, s(t_n, x)$, $t_n = (n + 1)\,T/N$.

    **Returns:** a [`sdegen.VPEpsModel`][].
    """
    _check_vp(sde)
    if not callable(score):
        raise ValueError(
            "`score` must be a callable score(t, x) -> Array, got "
            f"{type(score).__name__}."
        )
    n = _check_num_steps(num_timesteps, "num_timesteps")
    return VPEpsModel(score, sde, n)


# ---------------------------------------------------------------- validation


def _check_eps_model(eps_model) -> None:
    if not callable(eps_model):
        raise ValueError(
            "`eps_model` must be a callable eps_model(n, x) -> Array, got "
            f"{type(eps_model).__name__}."
        )


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


def _init(key, x_init, shape):
    """`(x_init, key for the step noise)`: x_init drawn from N(0, I) by default."""
    k_prior, k_noise = jr.split(key)
    if x_init is None:
        x_init = jr.normal(k_prior, shape, default_float())
    else:
        x_init = _check_x(x_init, shape, "x_init")
    return x_init, k_noise


# ---------------------------------------------------------------- DDIM


@eqx.filter_jit
def _ddim_loop(key, eps_model, abar, x_init, steps, eta, save):
    dtype = x_init.dtype
    abar = abar.astype(dtype)
    ab_now = abar[steps]
    ab_prev = jnp.concatenate([abar[steps[1:]], jnp.ones((1,), dtype)])
    keys = jr.split(key, steps.shape[0])

    def body(x, inp):
        n, a, a_prev, k = inp
        eps = jnp.asarray(eps_model(n, x)).astype(dtype)
        x0 = (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a)
        # sigma^2 = eta^2 (1 - a_prev)/(1 - a) (1 - a / a_prev)
        var = eta**2 * (1 - a_prev) / (1 - a) * -jnp.expm1(jnp.log(a) - jnp.log(a_prev))
        z = jr.normal(k, x.shape, dtype)
        dir_coef = jnp.sqrt(jnp.maximum(1 - a_prev - var, 0.0))
        x = jnp.sqrt(a_prev) * x0 + dir_coef * eps + jnp.sqrt(var) * z
        return x, (x if save else None)

    x, xs = lax.scan(body, x_init, (steps, ab_now, ab_prev, keys))
    if save:
        xs = jnp.concatenate([x_init[None], xs], axis=0)
    return x, xs


def ddim_sample(
    key: KeyArray,
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    shape: tuple[int, ...],
    num_steps: int = 50,
    eta: RealScalarLike = 0.0,
    *,
    x_init: DataLike | None = None,
    return_trajectory: bool = False,
) -> Data | tuple[Data, Float[Array, "steps ..."]]:
    r"""Draw one sample with DDIM (Song, Meng & Ermon 2021, eq. 12).

    On the uniform skip schedule $\tau = ((S-1)c, \dots, c, 0)$ with
    $c = \lfloor N / S\rfloor$ ($S$ = `num_steps`), each update from $n = \tau_i$ to
    $m = \tau_{i+1}$ (and from $n = 0$ to $m = -1$, $\bar\alpha_{-1} = 1$, last) is

    $$\hat x_0 = \frac{x - \sqrt{1 - \bar\alpha_n}\,\epsilon(n, x)}
    {\sqrt{\bar\alpha_n}},\quad x' = \sqrt{\bar\alpha_m}\,\hat x_0
    + \sqrt{1 - \bar\alpha_m - \sigma^2}\,\epsilon(n, x) + \sigma z,$$

    $$\sigma = \eta\sqrt{\frac{1 - \bar\alpha_m}{1 - \bar\alpha_n}}
    \sqrt{1 - \frac{\bar\alpha_n}{\bar\alpha_m}}.$$

    $\eta = 0$ is deterministic (a first-order discretisation of the probability-flow
    ODE); $\eta = 1$ with $S = N$ is DDPM ancestral sampling with variance
    $\tilde\beta_n$ (and draws the same noise as [`sdegen.ddpm_sample`][] for the same
    key). The last update returns $\hat x_0$. The loop is one jitted `lax.scan`.

    **Arguments:**

    - `key`: PRNG key (prior draw and step noise).
    - `eps_model`: a callable `eps_model(n, x)` with the integer step $n \in [0, N)$.
    - `alphas_cumprod`: $\bar\alpha_0 > \dots > \bar\alpha_{N-1}$ in $(0, 1]$.
    - `shape`: the shape of one sample.
    - `num_steps`: $S$, with $1 \le S \le N$.
    - `eta`: $\eta \ge 0$.
    - `x_init`: the sample at the first step of the schedule, $(S-1)c$; by default a
      draw from $\mathcal{N}(0, I)$ with `jax.random.split(key)[0]`.
    - `return_trajectory`: also return the $S + 1$ states (starting with `x_init`).

    **Returns:** the sample, or `(sample, trajectory)`.

    **Raises:** `ValueError` for a non-callable model, `alphas_cumprod` not in
    $(0, 1]$ and strictly decreasing, `num_steps` outside $[1, N]$, `eta < 0`, a bad
    `shape`, or a wrongly shaped or non-finite `x_init`.
    """
    _check_eps_model(eps_model)
    abar = _check_alphas_cumprod(alphas_cumprod)
    shape = check_shape_arg("shape", shape)
    num_steps = _check_num_steps(num_steps)
    n_total = abar.shape[0]
    if num_steps > n_total:
        raise ValueError(
            f"`num_steps` must be at most len(alphas_cumprod) = {n_total}, got "
            f"{num_steps}."
        )
    e = concrete_float("eta", eta)
    if e is not None and not (math.isfinite(e) and e >= 0):
        raise ValueError(f"`eta` must be finite and >= 0, got {e}.")
    c = n_total // num_steps
    steps = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32) * c
    x_init, k_noise = _init(key, x_init, shape)
    x, traj = _ddim_loop(k_noise, eps_model, abar, x_init, steps, eta,
                         return_trajectory)  # fmt: skip
    return (x, traj) if return_trajectory else x


# ---------------------------------------------------------------- DDPM


_VARIANCES = {
    "beta": r"$\sigma_n^2 = \beta_n$ (Ho et al.'s 'fixedlarge')",
    "beta_tilde": r"$\sigma_n^2 = \tilde\beta_n = \frac{1 - \bar\alpha_{n-1}}"
    r"{1 - \bar\alpha_n}\beta_n$ (the posterior variance, 'fixedsmall')",
}


@eqx.filter_jit
def _ddpm_loop(key, eps_model, betas, x_init, small, save):
    dtype = x_init.dtype
    betas = betas.astype(dtype)
    n_total = betas.shape[0]
    log_abar = jnp.cumsum(jnp.log1p(-betas))
    abar = jnp.exp(log_abar)
    abar_prev = jnp.concatenate([jnp.ones((1,), dtype), abar[:-1]])
    if small:
        var = (1 - abar_prev) / -jnp.expm1(log_abar) * betas
    else:
        var = betas
    var = var.at[0].set(0.0)
    steps = jnp.arange(n_total - 1, -1, -1, dtype=jnp.int32)
    keys = jr.split(key, n_total)

    def body(x, inp):
        n, k = inp
        eps = jnp.asarray(eps_model(n, x)).astype(dtype)
        b = betas[n]
        mean = (x - b / jnp.sqrt(-jnp.expm1(log_abar[n])) * eps) / jnp.sqrt(1 - b)
        x = mean + jnp.sqrt(var[n]) * jr.normal(k, x.shape, dtype)
        return x, (x if save else None)

    x, xs = lax.scan(body, x_init, (steps, keys))
    if save:
        xs = jnp.concatenate([x_init[None], xs], axis=0)
    return x, xs


def ddpm_sample(
    key: KeyArray,
    eps_model: Callable,
    betas: Float[ArrayLike, " N"],
    shape: tuple[int, ...],
    *,
    variance: str = "beta",
    x_init: DataLike | None = None,
    return_trajectory: bool = False,
) -> Data | tuple[Data, Float[Array, "steps ..."]]:
    r"""Draw one sample by DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): from
    $x_{N-1} \sim \mathcal{N}(0, I)$, for $n = N-1, \dots, 0$,

    $$x_{n-1} = \frac{1}{\sqrt{1 - \beta_n}}\Big(x_n - \frac{\beta_n}
    {\sqrt{1 - \bar\alpha_n}}\,\epsilon(n, x_n)\Big) + \sigma_n z,
    \qquad z \sim \mathcal{N}(0, I),$$

    with no noise at the last step ($\sigma_0 = 0$). The loop is one jitted
    `lax.scan`; it costs $N$ model calls.

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
    - `return_trajectory`: also return the $N + 1$ states (starting with `x_init`).

    **Returns:** the sample, or `(sample, trajectory)`.

    **Raises:** `ValueError` for a non-callable model, `betas` outside $(0, 1)$ or not
    1-D, an unknown `variance`, a bad `shape`, or a wrongly shaped or non-finite
    `x_init`.
    """
    _check_eps_model(eps_model)
    betas = _check_betas(betas)
    shape = check_shape_arg("shape", shape)
    if variance not in _VARIANCES:
        raise ValueError(
            f"Unknown `variance` {variance!r}; known: {', '.join(_VARIANCES)}."
        )
    x_init, k_noise = _init(key, x_init, shape)
    x, traj = _ddpm_loop(k_noise, eps_model, betas, x_init, variance == "beta_tilde",
                         return_trajectory)  # fmt: skip
    return (x, traj) if return_trajectory else x

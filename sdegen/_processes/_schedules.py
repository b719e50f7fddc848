r"""Discrete DDPM noise schedules (Ho et al. 2020, "Denoising Diffusion Probabilistic
Models"; Nichol & Dhariwal 2021) and the bridge from a continuous-time VP score model
to a noise-prediction model on them.

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
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._checks import check_callable, check_int, concrete_float
from .._core._custom_types import Data, RealScalarLike
from .._core._misc import default_float, is_concrete
from ._sde import AbstractSDE, check_sde


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
    n = check_int("num_timesteps", num_timesteps)
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
    n = check_int("num_timesteps", num_timesteps)
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
    check_sde(sde)
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
    n = check_int("num_timesteps", num_timesteps)
    return jax.vmap(sde.alpha)(_vp_times(sde, n)) ** 2


def vp_betas(sde: AbstractSDE, num_timesteps: int) -> Float[Array, " N"]:
    r"""$\beta_n = 1 - \bar\alpha_n / \bar\alpha_{n-1}$ for the $\bar\alpha$ of
    [`sdegen.vp_alphas_cumprod`][] ($\bar\alpha_{-1} = 1$), for
    [`sdegen.ddpm_sample`][] on a continuous VP model.

    **Returns:** $\beta$, shape `(num_timesteps,)`.
    """
    _check_vp(sde)
    n = check_int("num_timesteps", num_timesteps)
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
    check_callable("score", score, "score(t, x) -> Array")
    n = check_int("num_timesteps", num_timesteps)
    return VPEpsModel(score, sde, n)

r"""The sampler of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
Generative Models", EDM), Algorithm 2, for any linear SDE.

EDM works with the scaled state $\tilde x = x/\alpha$ and the noise level
$\tilde\sigma = \sigma/\alpha$, in which the probability-flow ODE is
$\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = (\tilde x - D)/\tilde\sigma$. Each step
optionally raises the noise level ("churn"), then takes a Heun step of that ODE.
"""

import math

import equinox as eqx
import jax.numpy as jnp

from ..._core._checks import concrete_float
from ..._core._custom_types import RealScalarLike
from ._base import (
    SUCCESS,
    AbstractDiffusionSolver,
    AbstractGridAware,
    Point,
    at,
    from_noise,
    need_noise,
    standard_normal,
)


class EDMSampler(AbstractDiffusionSolver, AbstractGridAware):
    r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2). From $t_i$ to
    $t_{i+1}$, with $\tilde\sigma_i = \sigma(t_i)/\alpha(t_i)$:

    1. churn: $\gamma_i = \min(S_\text{churn}/N, \sqrt2 - 1)$ if
       $\tilde\sigma_i \in [S_\text{tmin}, S_\text{tmax}]$, else 0;
       $\hat\sigma = (1 + \gamma_i)\tilde\sigma_i$ at the time $\hat t$ with
       $\tilde\sigma(\hat t) = \hat\sigma$, and
       $\hat x = \tilde x_i + \sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_\text{noise}\,z$;
    2. Euler: $d = (\hat x - D(\hat t, \alpha\hat x))/\hat\sigma$,
       $\tilde x_{i+1} = \hat x + (\tilde\sigma_{i+1} - \hat\sigma)\,d$;
    3. Heun's correction unless $\tilde\sigma_{i+1} = 0$:
       $d' = (\tilde x_{i+1} - D(t_{i+1}, \alpha\tilde x_{i+1}))/\tilde\sigma_{i+1}$,
       $\tilde x_{i+1} = \hat x + (\tilde\sigma_{i+1} - \hat\sigma)(d + d')/2$,

    with $x = \alpha\tilde x$ throughout ($N$ is the number of steps of the grid). With
    $S_\text{churn} = 0$ (default) it is deterministic: Heun's method on the
    probability-flow ODE in $\tilde\sigma$ (EDM's Algorithm 1), second order, two
    denoiser calls per step; with churn it needs the reverse-SDE terms for $z$.

    From $t_i$ with $\alpha = 0$ ($\tilde\sigma_i = \infty$, $t = T$ of an
    interpolant) the step is the limit of the Euler step, DDIM's
    $x_{i+1} = \alpha D + \sigma\hat\varepsilon$ (no churn, no Heun correction,
    whose average with an infinite step has no limit).
    """

    s_churn: RealScalarLike = 0.0
    s_tmin: RealScalarLike = 0.0
    s_tmax: RealScalarLike = math.inf
    s_noise: RealScalarLike = 1.0
    num_steps: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        for name in ("s_churn", "s_tmin", "s_noise"):
            v = concrete_float(name, getattr(self, name))
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"`{name}` must be finite and >= 0, got {v}.")
        v = concrete_float("s_tmax", self.s_tmax)
        if v is not None and not v >= 0:
            raise ValueError(f"`s_tmax` must be >= 0, got {v}.")

    def _churns(self) -> bool:
        v = concrete_float("s_churn", self.s_churn)
        return v is None or v > 0

    def with_num_steps(self, num_steps):
        return EDMSampler(self.s_churn, self.s_tmin, self.s_tmax, self.s_noise,
                          int(num_steps))  # fmt: skip

    def order(self, terms):
        return 2

    def strong_order(self, terms):
        return 0.5 if self._churns() else None

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, noise = self.parts(terms)
        s, t = at(drift, t0), at(drift, t1)
        y1 = from_noise(drift, s, t, y0, args,
                        lambda: self._step(drift, noise, s, t, t0, t1, y0, args))
        return y1, None, dict(y0=y0, y1=y1), None, SUCCESS

    def _step(self, drift, noise, s, t, t0, t1, y0, args):
        sde = drift.sde
        sig_s, sig_t = s.sigma / s.alpha, t.sigma / t.alpha
        xs = y0 / s.alpha
        if self._churns():
            need_noise(noise, "EDMSampler with s_churn > 0")
            if self.num_steps is None:
                raise ValueError(
                    "EDMSampler with s_churn > 0 needs the number of steps; run it "
                    "through sdegen's samplers, or use .with_num_steps(N)."
                )
            inside = (sig_s >= self.s_tmin) & (sig_s <= self.s_tmax)
            churn = jnp.minimum(self.s_churn / self.num_steps, math.sqrt(2) - 1)
            gamma = jnp.where(inside, churn, 0.0)
            t_hat = jnp.minimum(sde._inverse_lambda(-jnp.log(sig_s * (1 + gamma))), sde.T)
            hat = Point(sde, jnp.where(gamma > 0, t_hat, s.t))
            sig_hat = hat.sigma / hat.alpha
            z = standard_normal(noise, t0, t1)
            xs = xs + jnp.sqrt(jnp.maximum(sig_hat**2 - sig_s**2, 0.0)) * self.s_noise * z
        else:
            hat, sig_hat = s, sig_s
        xs = xs.astype(y0.dtype)
        d = (xs - drift.denoise(hat.t, (hat.alpha * xs).astype(y0.dtype), args)) / sig_hat
        x1 = xs + (sig_t - sig_hat) * d
        d1 = (x1 - drift.denoise(t.t, (t.alpha * x1).astype(y0.dtype), args)) / sig_t
        x1 = jnp.where(sig_t > 0, xs + (sig_t - sig_hat) * 0.5 * (d + d1), x1)
        return (t.alpha * x1).astype(y0.dtype)


EDMSampler.__init__.__doc__ = r"""**Arguments** (EDM's names and defaults):

- `s_churn`: $S_\text{churn} \ge 0$, the total amount of noise added back (0:
  deterministic).
- `s_tmin`, `s_tmax`: the range of $\tilde\sigma$ in which to churn.
- `s_noise`: $S_\text{noise}$, the scale of the added noise (EDM uses 1.003–1.007).
- `num_steps`: $N$; filled in by sdegen's samplers from the grid.
"""

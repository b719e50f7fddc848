r"""Exponential integrators of the probability-flow ODE in $\lambda = \log(\alpha/\sigma)$.

Written with the data prediction $D(t, x) = (x + \sigma^2 s)/\alpha$ (Tweedie's
denoiser), the probability-flow ODE has the exact solution from $s$ to $t$

$$x_t = \frac{\sigma_t}{\sigma_s}x_s + \sigma_t\int_{\lambda_s}^{\lambda_t}
e^{\lambda}D(\lambda, x_\lambda)\,\mathrm{d}\lambda,$$

and each solver approximates the integral (Lu et al. 2022, "DPM-Solver" and
"DPM-Solver++"): with $h = \lambda_t - \lambda_s$,

- DDIM = DPM-Solver++(1) (Song, Meng & Ermon 2021): $D$ constant over the step,
  $x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t(1 - e^{-h})D_s$, i.e.
  $x_t = \alpha_t D_s + \sigma_t\hat\epsilon_s$; with $\eta > 0$ it adds noise
  $c = \eta\,\sigma_t\sqrt{1 - e^{-2h}}$: $x_t = \alpha_t D_s +
  \sqrt{\sigma_t^2 - c^2}\,\hat\epsilon_s + c z$ ($\eta = 1$ is DDPM's posterior);
- DPM-Solver++(2M): $D$ extrapolated linearly in $\lambda$ from this and the previous
  step, $D = (1 + \tfrac{1}{2r})D_s - \tfrac{1}{2r}D_{\text{prev}}$, $r = h_{\text{prev}}
  /h$;
- SDE-DPM-Solver++(2M): the same for the reverse SDE (k-diffusion's
  `sample_dpmpp_2m_sde`, midpoint form);
- DPM-Solver-2 and -3 (single-step, in the noise prediction
  $\hat\epsilon = -\sigma s$, intermediate points at $\lambda_s + r_i h$);
- ancestral sampling: the Gaussian posterior $q(x_t \mid x_s, x_0 = D_s)$ (DDPM, Ho et
  al. 2020; SMLD, Song & Ermon 2019).

Every update is written in ratios of $\alpha$ and $\sigma$ (or $e^{-h}$ via `expm1`) so
that a last step onto clean data ($\sigma_t = 0$, $h = \infty$) is well defined for the
data-prediction solvers.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._core._checks import check_choice, concrete_float
from ..._core._custom_types import RealScalarLike
from ._base import (
    SUCCESS,
    AbstractDiffusionSolver,
    Point,
    at,
    at_lambda,
    from_noise,
    need_noise,
    standard_normal,
)


def _noise_prediction(drift, p: Point, x, args):
    r"""$\hat\epsilon = (x - \alpha D)/\sigma = -\sigma s$."""
    return (-p.sigma * drift.score_at(p.t, x, args)).astype(x.dtype)


def _cast(x, like):
    return jnp.asarray(x).astype(like.dtype)


class DDIM(AbstractDiffusionSolver):
    r"""DDIM (Song, Meng & Ermon 2021, eq. 12), which is DPM-Solver++(1): one denoiser
    call per step,

    $$x_t = \alpha_t D_s + \sqrt{\sigma_t^2 - c^2}\,\hat\epsilon_s + c\,z,\qquad
    \hat\epsilon_s = \frac{x_s - \alpha_s D_s}{\sigma_s},\qquad
    c = \eta\,\sigma_t\sqrt{1 - e^{-2h}}.$$

    $\eta = 0$ (default) is deterministic, the first-order exponential integrator of
    the probability-flow ODE; $\eta = 1$ draws from the Gaussian posterior
    $q(x_t \mid x_s, x_0 = D_s)$ (DDPM with the $\tilde\beta$ variance). With
    $\eta > 0$ it needs the reverse-SDE terms (for the noise $z$).
    """

    eta: RealScalarLike = 0.0

    def __check_init__(self):
        v = concrete_float("eta", self.eta)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"`eta` must be finite and >= 0, got {v}.")

    def _stochastic(self) -> bool:
        v = concrete_float("eta", self.eta)
        return v is None or v > 0

    def order(self, terms):
        return 1

    def strong_order(self, terms):
        return 0.5 if self._stochastic() else None

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, noise = self.parts(terms)
        s, t = at(drift, t0), at(drift, t1)
        d = drift.denoise(s.t, y0, args)
        eps = (y0 - s.alpha * d) / s.sigma
        if not self._stochastic():
            y1 = t.alpha * d + t.sigma * eps
        else:
            need_noise(noise, "DDIM with eta > 0")
            h = t.lam - s.lam
            c = self.eta * t.sigma * jnp.sqrt(-jnp.expm1(-2 * h))
            z = standard_normal(noise, t0, t1)
            y1 = t.alpha * d + jnp.sqrt(jnp.maximum(t.sigma**2 - c**2, 0.0)) * eps + c * z
        y1 = _cast(y1, y0)
        return y1, None, dict(y0=y0, y1=y1), None, SUCCESS


class Ancestral(AbstractDiffusionSolver):
    r"""Ancestral sampling (Ho et al. 2020, Algorithm 2; Song & Ermon 2019): draw
    $x_t$ from the Gaussian $q(x_t \mid x_s, x_0 = D_s)$ of the forward process, with
    the posterior mean

    $$\mu = \alpha_t D_s + \sigma_t e^{-h}\hat\epsilon_s,\qquad
    e^{-h} = \frac{\alpha_s\sigma_t}{\sigma_s\alpha_t},$$

    and the variance `"posterior"`, $\sigma_t^2(1 - e^{-2h})$ (DDPM's $\tilde\beta$,
    SMLD's $\sigma_t^2(\sigma_s^2 - \sigma_t^2)/\sigma_s^2$), or `"forward"`, the
    forward transition's $\sigma_s^2 - (\alpha_s/\alpha_t)^2\sigma_t^2$ (DDPM's
    $\beta$; no noise on a step onto clean data). `"auto"` follows score_sde's
    `AncestralSamplingPredictor`: `"forward"` (the DDPM step) for SDEs whose
    $\alpha$ varies, `"posterior"` (the SMLD step) for $\alpha \equiv 1$ (VE).
    """

    variance: str = "auto"

    def __check_init__(self):
        check_choice("variance", self.variance, ("auto", "forward", "posterior"))

    def order(self, terms):
        return 1

    def strong_order(self, terms):
        return 0.5

    def init(self, terms, t0, t1, y0, args):
        return None

    def _variance(self, sde) -> str:
        if self.variance != "auto":
            return self.variance
        with jax.ensure_compile_time_eval():
            a = sde._alpha(jnp.asarray(float(sde.T)))
            try:
                return "posterior" if float(a) == 1.0 else "forward"
            except jax.errors.ConcretizationTypeError:
                return "forward"

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, noise = self.parts(terms)
        need_noise(noise, "Ancestral sampling")
        s, t = at(drift, t0), at(drift, t1)
        d = drift.denoise(s.t, y0, args)
        eps = (y0 - s.alpha * d) / s.sigma
        ratio = (s.alpha * t.sigma) / (s.sigma * t.alpha)  # e^{-h}
        mean = t.alpha * d + t.sigma * ratio * eps
        if self._variance(drift.sde) == "posterior":
            var = t.sigma**2 * (1 - ratio**2)
        else:
            var = s.sigma**2 - (s.alpha / t.alpha) ** 2 * t.sigma**2
            var = jnp.where(t.sigma > 0, var, 0.0)
        z = standard_normal(noise, t0, t1)
        y1 = _cast(mean + jnp.sqrt(jnp.maximum(var, 0.0)) * z, y0)
        return y1, None, dict(y0=y0, y1=y1), None, SUCCESS


class _History(eqx.Module):
    d: Any
    lam: Any
    valid: Any


class DPMSolverPP2M(AbstractDiffusionSolver):
    r"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): one denoiser
    call per step. The first step is DDIM; every later step extrapolates the data
    prediction linearly in $\lambda$ from the previous step's,

    $$D = \Big(1 + \frac{1}{2r}\Big)D_s - \frac{1}{2r}D_{\text{prev}},\quad
    r = \frac{\lambda_s - \lambda_{\text{prev}}}{h},\qquad
    x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t\,\mathrm{expm1}(-h)\,D,$$

    including the last step (no lower-order final step), except onto clean data
    ($\sigma_t = 0$, where $h = \infty$), which is first order as in k-diffusion.
    Second order in the step size. After a jump in the state (`made_jump`) the
    history is dropped and the step is first order.
    """

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return _History(jnp.zeros_like(y0), jnp.zeros((), y0.dtype), jnp.asarray(False))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, _ = self.parts(terms)
        s, t = at(drift, t0), at(drift, t1)
        d0 = drift.denoise(s.t, y0, args)
        h = t.lam - s.lam
        r = (s.lam - solver_state.lam) / h
        use = solver_state.valid & ~jnp.asarray(made_jump) & (t.sigma > 0)
        d = jnp.where(use, (1 + 0.5 / r) * d0 - (0.5 / r) * solver_state.d, d0)
        y1 = _cast((t.sigma / s.sigma) * y0 - t.alpha * jnp.expm1(-h) * d, y0)
        state = _History(d0, s.lam.astype(y0.dtype), jnp.asarray(True))
        return y1, None, dict(y0=y0, y1=y1), state, SUCCESS


class DPMSolverPP2MSDE(AbstractDiffusionSolver):
    r"""SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", §5; k-diffusion's
    `sample_dpmpp_2m_sde` with the midpoint correction, diffusers'
    `sde-dpmsolver++`): for the reverse SDE, with $\eta$ scaling the injected noise,

    $$x_t = \frac{\sigma_t}{\sigma_s}e^{-\eta h}x_s + \alpha_t(1 - e^{-(1+\eta)h})D_s
    + \frac{\alpha_t}{2r}(1 - e^{-(1+\eta)h})(D_s - D_{\text{prev}})
    + \sigma_t\sqrt{1 - e^{-2\eta h}}\,z,$$

    the correction term from the second step on. One denoiser call per step. It is
    the exact solution in $\lambda$ (with $D$ extrapolated) of the reverse-SDE family of
    [`sdegen.reverse_terms`][] with noise scale $\sqrt\eta$; with
    `sample_sde(..., noise_scale=`$\eta_s$`)` its $\eta$ is multiplied by $\eta_s^2$.
    """

    eta: RealScalarLike = 1.0

    def __check_init__(self):
        v = concrete_float("eta", self.eta)
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"`eta` must be finite and >= 0, got {v}.")

    def order(self, terms):
        return 2

    def strong_order(self, terms):
        return 0.5

    def init(self, terms, t0, t1, y0, args):
        return _History(jnp.zeros_like(y0), jnp.zeros((), y0.dtype), jnp.asarray(False))

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, noise = self.parts(terms)
        need_noise(noise, "SDE-DPM-Solver++(2M)")
        s, t = at(drift, t0), at(drift, t1)
        d0 = drift.denoise(s.t, y0, args)
        h = t.lam - s.lam
        # the terms' noise scale: drift weight w = (1 + noise_scale^2)/2
        eta = self.eta if drift.weight == 1.0 else self.eta * (2 * drift.weight - 1)
        eta_h = jnp.where(eta == 0, 0.0, eta * h)  # eta = 0 from lambda = -inf: 0, not NaN
        one_minus = -jnp.expm1(-h - eta_h)
        y1 = (t.sigma / s.sigma) * jnp.exp(-eta_h) * y0 + t.alpha * one_minus * d0
        r = (s.lam - solver_state.lam) / h
        use = solver_state.valid & ~jnp.asarray(made_jump) & (t.sigma > 0)
        corr = 0.5 * t.alpha * one_minus / r * (d0 - solver_state.d)
        y1 = jnp.where(use, y1 + corr, y1)
        z = standard_normal(noise, t0, t1)
        y1 = y1 + t.sigma * jnp.sqrt(-jnp.expm1(-2 * eta_h)) * z
        y1 = _cast(jnp.where(t.sigma > 0, y1, t.alpha * d0), y0)
        state = _History(d0, s.lam.astype(y0.dtype), jnp.asarray(True))
        return y1, None, dict(y0=y0, y1=y1), state, SUCCESS


class DPMSolver2(AbstractDiffusionSolver):
    r"""DPM-Solver-2 (Lu et al. 2022, "DPM-Solver", Algorithm 1 with $r_1 = \tfrac12$):
    single-step, second order, two noise-prediction calls per step, the second at the
    midpoint in $\lambda$, $s_1 = t_\lambda(\lambda_s + h/2)$:

    $$u = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{h/2} - 1)\hat\epsilon_s,
    \qquad x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^{h} - 1)
    \hat\epsilon(s_1, u).$$

    Needs $\sigma > 0$ at every grid time. From $\lambda_s = -\infty$ ($t = T$ of an
    interpolant, where $\alpha_s = 0$ and the formula's $\alpha_t/\alpha_s$ is
    infinite) the step is the exact step from pure noise, DDIM's (see
    [`sdegen.DDIM`][]).
    """

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        drift, _ = self.parts(terms)
        s, t = at(drift, t0), at(drift, t1)

        def regular():
            h = t.lam - s.lam
            m = at_lambda(drift, s.lam + 0.5 * h)
            e_s = _noise_prediction(drift, s, y0, args)
            u = (m.alpha / s.alpha) * y0 - m.sigma * jnp.expm1(0.5 * h) * e_s
            e_m = _noise_prediction(drift, m, _cast(u, y0), args)
            return _cast((t.alpha / s.alpha) * y0 - t.sigma * jnp.expm1(h) * e_m, y0)

        y1 = from_noise(drift, s, t, y0, args, regular)
        return y1, None, dict(y0=y0, y1=y1), None, SUCCESS


class DPMSolver3(AbstractDiffusionSolver):
    r"""DPM-Solver-3 (Lu et al. 2022, "DPM-Solver", Algorithm 2 with $r_1 = \tfrac13$,
    $r_2 = \tfrac23$): single-step, third order, three noise-prediction calls per step
    at $s_i = t_\lambda(\lambda_s + r_i h)$:

    $$u_1 = \tfrac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}\phi_1(r_1h)\hat\epsilon_s,
    \quad u_2 = \tfrac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}\phi_1(r_2h)
    \hat\epsilon_s - \tfrac{r_2}{r_1}\sigma_{s_2}\big(\tfrac{\phi_1(r_2h)}{r_2h} -
    1\big)(\hat\epsilon_{s_1} - \hat\epsilon_s),$$

    $$x_t = \tfrac{\alpha_t}{\alpha_s}x_s - \sigma_t\phi_1(h)\hat\epsilon_s -
    \tfrac{1}{r_2}\sigma_t\big(\tfrac{\phi_1(h)}{h} - 1\big)(\hat\epsilon_{s_2} -
    \hat\epsilon_s),$$

    with $\phi_1(v) = e^v - 1$. Needs $\sigma > 0$ at every grid time. From
    $\lambda_s = -\infty$ the step is DDIM's, as for [`sdegen.DPMSolver2`][].
    """

    def order(self, terms):
        return 3

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        drift, _ = self.parts(terms)
        s, t = at(drift, t0), at(drift, t1)

        def regular():
            h = t.lam - s.lam
            p1 = at_lambda(drift, s.lam + r1 * h)
            p2 = at_lambda(drift, s.lam + r2 * h)
            e_s = _noise_prediction(drift, s, y0, args)
            u1 = (p1.alpha / s.alpha) * y0 - p1.sigma * jnp.expm1(r1 * h) * e_s
            e_1 = _noise_prediction(drift, p1, _cast(u1, y0), args)
            phi22 = jnp.expm1(r2 * h) / (r2 * h) - 1
            u2 = ((p2.alpha / s.alpha) * y0 - p2.sigma * jnp.expm1(r2 * h) * e_s
                  - (r2 / r1) * p2.sigma * phi22 * (e_1 - e_s))  # fmt: skip
            e_2 = _noise_prediction(drift, p2, _cast(u2, y0), args)
            phi2 = jnp.expm1(h) / h - 1
            y1 = ((t.alpha / s.alpha) * y0 - t.sigma * jnp.expm1(h) * e_s
                  - (1 / r2) * t.sigma * phi2 * (e_2 - e_s))  # fmt: skip
            return _cast(y1, y0)

        y1 = from_noise(drift, s, t, y0, args, regular)
        return y1, None, dict(y0=y0, y1=y1), None, SUCCESS


DDIM.__init__.__doc__ = r"""**Arguments:**

- `eta`: $\eta \ge 0$, the noise scale (0: deterministic DDIM).
"""
Ancestral.__init__.__doc__ = """**Arguments:**

- `variance`: `"auto"`, `"forward"` or `"posterior"` (see above).
"""
DPMSolverPP2M.__init__.__doc__ = """**Arguments:** none."""
DPMSolverPP2MSDE.__init__.__doc__ = r"""**Arguments:**

- `eta`: $\eta \ge 0$, the scale of the injected noise (1: the reverse SDE).
"""
DPMSolver2.__init__.__doc__ = """**Arguments:** none."""
DPMSolver3.__init__.__doc__ = """**Arguments:** none."""

r"""Forward noising processes $\mathrm{d}x = f(t)\,x\,\mathrm{d}t + g(t)\,\mathrm{d}W$.

Every SDE here is linear with a scalar diffusion, so the perturbation kernel is
Gaussian in closed form,

$$p_t(x \mid x_0) = \mathcal{N}\big(x;\ \alpha(t)\,x_0,\ \sigma(t)^2 I\big),
\qquad f = \frac{\mathrm{d}\log\alpha}{\mathrm{d}t},\qquad
g^2 = \frac{\mathrm{d}\sigma^2}{\mathrm{d}t} - 2 f \sigma^2,$$

and the half log signal-to-noise ratio $\lambda(t) = \log(\alpha(t)/\sigma(t))$ (the
time variable of DPM-Solver) is strictly decreasing, so $t(\lambda)$ exists. The
processes are those of Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations" (VE, VP, sub-VP), with the conventions of the
official `score_sde` code, and the $\sigma(t) = t$ process of Karras et al. 2022 (EDM).
"""

import abc
import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from .._core._checks import check_shape_arg, check_time, concrete_float
from .._core._custom_types import Data, KeyArray, RealScalarLike, Scalar
from .._core._misc import default_float, is_concrete


def as_time(t: RealScalarLike) -> Scalar:
    """A time as a floating array (integers become JAX's default float)."""
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(default_float())
    return t


class AbstractSDE(eqx.Module):
    r"""Base class for a forward SDE $\mathrm{d}x = f(t)\,x\,\mathrm{d}t + g(t)\,
    \mathrm{d}W$ on $t \in [0, T]$ with Gaussian marginals
    $\mathcal{N}(\alpha(t) x_0, \sigma(t)^2 I)$.

    Subclasses give the closed forms as the unchecked methods `_alpha`, `_sigma`,
    `_f` ($\mathrm{d}\log\alpha/\mathrm{d}t$), `_g2` ($g^2$) and `_inverse_lambda`
    ($t(\lambda)$), and the prior's standard deviation; sdegen's solvers call these in
    their inner loops. The public methods (`alpha`, `sigma`, `drift`, `diffusion`,
    `marginal`, ...) check that $t \in [0, T]$ — with a `ValueError` for a concrete
    time and an `eqx.error_if` under `jit` — and then call them. To define an SDE
    from your own $\alpha(t), \sigma(t)$ or $\beta(t)$ in one line, see
    [`sdegen.CustomSDE`][] and [`sdegen.BetaSDE`][].
    """

    T: eqx.AbstractVar[float]

    # ------------------------------------------------ closed forms (unchecked)

    @abc.abstractmethod
    def _alpha(self, t: Scalar) -> Scalar:
        r"""$\alpha(t)$, for a time already known to lie in $[0, T]$."""

    @abc.abstractmethod
    def _sigma(self, t: Scalar) -> Scalar:
        r"""$\sigma(t)$, for a time already known to lie in $[0, T]$."""

    @abc.abstractmethod
    def _f(self, t: Scalar) -> Scalar:
        r"""The drift coefficient $f(t) = \mathrm{d}\log\alpha/\mathrm{d}t$."""

    @abc.abstractmethod
    def _g2(self, t: Scalar) -> Scalar:
        r"""The squared diffusion $g(t)^2$."""

    @abc.abstractmethod
    def _inverse_lambda(self, lam: Scalar) -> Scalar:
        r"""The time $t$ with $\lambda(t) = $ `lam`."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        r"""Standard deviation $s$ of the prior $\mathcal{N}(0, s^2 I)$ at $t = T$."""

    def _lambda(self, t: Scalar) -> Scalar:
        return jnp.log(self._alpha(t)) - jnp.log(self._sigma(t))

    def _alpha_at_T(self) -> float | None:
        r"""$\alpha(T)$ in Python floats (no XLA program), or `None` where a subclass
        cannot give it so (then [`vanishes_at_T`] evaluates `_alpha(T)` itself). The
        samplers ask this while they are traced; a few eager `jnp` operations there
        would each compile an XLA program of their own on a user's first call."""
        return None

    # ------------------------------------------------ public, checked

    def _t(self, t: RealScalarLike) -> Scalar:
        return as_time(check_time(self, t))

    def alpha(self, t: RealScalarLike) -> Scalar:
        r"""Mean coefficient $\alpha(t)$ of $p_t(x \mid x_0)$, for $t \in [0, T]$."""
        return self._alpha(self._t(t))

    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""Standard deviation $\sigma(t)$ of $p_t(x \mid x_0)$, for $t \in [0, T]$."""
        return self._sigma(self._t(t))

    def drift(self, t: RealScalarLike, x: Data) -> Data:
        r"""Drift $f(t)\,x$ of the forward SDE, $f = \mathrm{d}\log\alpha/\mathrm{d}t$."""
        x = jnp.asarray(x)
        return (self._f(self._t(t)) * x).astype(jnp.result_type(x))

    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""Diffusion coefficient $g(t)$ of the forward SDE."""
        return jnp.sqrt(self._g2(self._t(t)))

    def marginal(self, t: RealScalarLike, x0: Data) -> tuple[Data, Scalar]:
        r"""Mean and standard deviation of $p_t(x \mid x_0) = \mathcal{N}(\alpha(t) x_0,
        \sigma(t)^2 I)$.

        **Arguments:**

        - `t`: a scalar time in $[0, T]$.
        - `x0`: one clean example.

        **Returns:** `(mean, std)` with `mean = alpha(t) * x0` (shape of `x0`) and the
        scalar `std = sigma(t)`.
        """
        t = self._t(t)
        return self._alpha(t) * jnp.asarray(x0), self._sigma(t)

    def marginal_lambda(self, t: RealScalarLike) -> Scalar:
        r"""The half log signal-to-noise ratio $\lambda(t) = \log(\alpha(t)/\sigma(t))$
        (DPM-Solver's time variable; $+\infty$ where $\sigma = 0$)."""
        return self._lambda(self._t(t))

    def inverse_lambda(self, lam: RealScalarLike) -> Scalar:
        r"""The time $t \in [0, T]$ with $\lambda(t) = $ `lam` (the inverse of
        [`sdegen.AbstractSDE.marginal_lambda`][]; values of $\lambda$ outside
        $[\lambda(T), \lambda(0)]$ give times clipped to $[0, T]$)."""
        concrete_float("lam", lam)
        return self._inverse_lambda(as_time(lam))

    def log_snr(self, t: RealScalarLike) -> Scalar:
        r"""Log signal-to-noise ratio $\log(\alpha(t)^2 / \sigma(t)^2) = 2\lambda(t)$."""
        return 2 * self.marginal_lambda(t)

    def prior_sample(self, key: KeyArray, shape: tuple[int, ...]) -> Data:
        r"""One draw from the prior $\mathcal{N}(0, s^2 I)$ of the given shape, in JAX's
        default floating dtype."""
        shape = check_shape_arg("shape", shape)
        return self.prior_std * jr.normal(key, shape, default_float())

    def prior_logp(self, z: Data) -> Scalar:
        r"""Log-density of one sample $z \in \mathbb{R}^D$ under the prior,
        $\log \mathcal{N}(z; 0, s^2 I) = -\tfrac{D}{2}\log(2\pi s^2) -
        \tfrac{\lVert z\rVert^2}{2 s^2}$, summed over all entries of `z`."""
        z = jnp.asarray(z)
        s2 = self.prior_std**2
        return -0.5 * z.size * math.log(2 * math.pi * s2) - 0.5 * jnp.sum(z**2) / s2


def check_sde(sde: Any, name: str = "sde") -> None:
    """`sde` must be an [`sdegen.AbstractSDE`][]: a `ValueError` naming the argument
    otherwise (the check lives beside the class it checks)."""
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"`{name}` must be an sdegen.AbstractSDE (e.g. sdegen.VPSDE()), got "
            f"{type(sde).__name__}."
        )


def check_T(T: RealScalarLike) -> None:
    v = concrete_float("T", T)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"`T` must be finite and > 0, got {v}.")


def t_of_integral(beta_min, beta_max, B):
    r"""The $t \ge 0$ with $\beta_{\min} t + \tfrac12 t^2 (\beta_{\max} - \beta_{\min})
    = B$, in the cancellation-free form $2B / (\beta_{\min} + \sqrt{\beta_{\min}^2 +
    2(\beta_{\max} - \beta_{\min}) B})$ (valid for a constant $\beta$ too)."""
    d = beta_max - beta_min
    return 2 * B / (beta_min + jnp.sqrt(beta_min**2 + 2 * d * B))


class _AbstractBetaSDE(AbstractSDE):
    r"""Shared linear schedule $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$
    ($\beta_{\max} = \beta_{\min}$ gives a constant $\beta$)."""

    beta_min: eqx.AbstractVar[float]
    beta_max: eqx.AbstractVar[float]

    def __check_init__(self):
        check_T(self.T)
        bmin = concrete_float("beta_min", self.beta_min)
        bmax = concrete_float("beta_max", self.beta_max)
        if bmin is not None and not (math.isfinite(bmin) and bmin >= 0):
            raise ValueError(f"`beta_min` must be finite and >= 0, got {bmin}.")
        if bmax is not None and not (math.isfinite(bmax) and bmax > 0):
            raise ValueError(f"`beta_max` must be finite and > 0, got {bmax}.")
        if bmin is not None and bmax is not None and not bmax >= bmin:
            raise ValueError(
                "`beta_max` must be at least `beta_min` (equal for a constant beta), "
                f"got beta_min={bmin}, beta_max={bmax}."
            )

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _integral(self, t):
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def beta(self, t: RealScalarLike) -> Scalar:
        r"""$\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$."""
        return self._beta(self._t(t))

    def integral_beta(self, t: RealScalarLike) -> Scalar:
        r"""$B(t) = \int_0^t \beta(s)\,\mathrm{d}s = \beta_{\min} t +
        \tfrac12 t^2 (\beta_{\max} - \beta_{\min})$."""
        return self._integral(self._t(t))

    def _alpha(self, t):
        r"""$\alpha(t) = \exp(-\tfrac12 B(t))$."""
        return jnp.exp(-0.5 * self._integral(t))

    def _alpha_at_T(self):
        T, bmin, bmax = float(self.T), float(self.beta_min), float(self.beta_max)
        return math.exp(-0.5 * (bmin * T + 0.5 * T**2 * (bmax - bmin)))

    def _f(self, t):
        r"""$f(t) = -\tfrac12\beta(t)$."""
        return -0.5 * self._beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_AbstractBetaSDE):
    r"""Variance-preserving SDE (the continuous DDPM), Song et al. 2021:

    $$\mathrm{d}x = -\tfrac12\beta(t)\,x\,\mathrm{d}t + \sqrt{\beta(t)}\,\mathrm{d}W,
    \qquad \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}).$$

    Marginals: $\alpha(t) = e^{-B(t)/2}$, $\sigma(t) = \sqrt{1 - e^{-B(t)}}$ with
    $B(t) = \int_0^t \beta$; $\lambda(t) = -\tfrac12 B - \tfrac12\log(1 - e^{-B})$,
    inverted in closed form by $B = \log(1 + e^{-2\lambda})$. Prior $\mathcal{N}(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def _sigma(self, t):
        r"""$\sigma(t) = \sqrt{1 - e^{-B(t)}}$, computed with `expm1`."""
        return jnp.sqrt(-jnp.expm1(-self._integral(t)))

    def _lambda(self, t):
        r"""$\lambda = -\tfrac12 B - \tfrac12\log(-\mathrm{expm1}(-B))$: finite even
        where $\alpha = e^{-B/2}$ underflows (a large $\beta_{\max}$)."""
        B = self._integral(t)
        return -0.5 * B - 0.5 * jnp.log(-jnp.expm1(-B))

    def _g2(self, t):
        r"""$g(t)^2 = \beta(t)$."""
        return self._beta(t)

    def _inverse_lambda(self, lam):
        B = jnp.logaddexp(0.0, -2 * lam)
        t = t_of_integral(self.beta_min, self.beta_max, B)
        return jnp.clip(t, 0.0, self.T)


class SubVPSDE(_AbstractBetaSDE):
    r"""Sub-variance-preserving SDE, Song et al. 2021:

    $$\mathrm{d}x = -\tfrac12\beta(t)\,x\,\mathrm{d}t +
    \sqrt{\beta(t)\big(1 - e^{-2B(t)}\big)}\,\mathrm{d}W.$$

    Marginals: $\alpha(t) = e^{-B(t)/2}$, $\sigma(t) = 1 - e^{-B(t)}$ (always below the
    VP SDE's). With $u = \alpha$, $\lambda = \log u - \log(1 - u^2)$ inverts in closed
    form: $u = 2r / (1 + \sqrt{1 + 4r^2})$, $r = e^\lambda$. Prior $\mathcal{N}(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def _sigma(self, t):
        r"""$\sigma(t) = 1 - e^{-B(t)}$, computed with `expm1`."""
        return -jnp.expm1(-self._integral(t))

    def _lambda(self, t):
        r"""$\lambda = -\tfrac12 B - \log(-\mathrm{expm1}(-B))$ (no underflow of
        $\alpha$)."""
        B = self._integral(t)
        return -0.5 * B - jnp.log(-jnp.expm1(-B))

    def _g2(self, t):
        r"""$g(t)^2 = \beta(t)(1 - e^{-2B(t)})$."""
        return self._beta(t) * -jnp.expm1(-2 * self._integral(t))

    def _inverse_lambda(self, lam):
        # 1 - u = (1 + s - 2r) / (1 + s) with s = sqrt(1 + 4 r^2), and
        # s - 2r = 1 / (s + 2r): no cancellation for large r.
        r = jnp.exp(lam)
        s = jnp.sqrt(1 + 4 * r**2)
        one_minus_u = (1 + 1 / (s + 2 * r)) / (1 + s)
        # for lam < 0 (u small, possibly below the smallest float): B = -2 log u
        # with log u = log 2 + lam - log(1 + s), finite for any lam
        s_lo = jnp.sqrt(1 + 4 * jnp.exp(2 * jnp.minimum(lam, 0.0)))
        B_lo = -2 * (jnp.log(2.0) + lam - jnp.log1p(s_lo))
        B = jnp.where(lam < 0, B_lo, -2 * jnp.log1p(-one_minus_u))
        t = t_of_integral(self.beta_min, self.beta_max, B)
        return jnp.clip(t, 0.0, self.T)


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE (continuous SMLD / NCSN), Song et al. 2021:

    $$\mathrm{d}x = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})}\,\mathrm{d}W,
    \qquad \sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t.$$

    Marginals: $\alpha(t) = 1$ and std $\sigma(t)$ as above: this is the convention
    of the official score_sde code, in which data at $t = 0$ already counts as
    perturbed by $\sigma_{\min}$. $\lambda = -\log\sigma$. Prior
    $\mathcal{N}(0, \sigma(T)^2 I)$.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __check_init__(self):
        check_T(self.T)
        smin = concrete_float("sigma_min", self.sigma_min)
        smax = concrete_float("sigma_max", self.sigma_max)
        if smin is not None and not (math.isfinite(smin) and smin > 0):
            raise ValueError(f"`sigma_min` must be finite and > 0, got {smin}.")
        if smax is not None and not math.isfinite(smax):
            raise ValueError(f"`sigma_max` must be finite, got {smax}.")
        if smin is not None and smax is not None and not smax > smin:
            raise ValueError(
                "`sigma_max` must be greater than `sigma_min`, got "
                f"sigma_min={smin}, sigma_max={smax}."
            )

    def _rate(self):
        return math.log(self.sigma_max / self.sigma_min)

    def _alpha(self, t):
        return jnp.ones_like(t)

    def _alpha_at_T(self):
        return 1.0

    def _sigma(self, t):
        r"""$\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t}$."""
        return self.sigma_min * jnp.exp(t * self._rate())

    def _f(self, t):
        return jnp.zeros_like(t)

    def _g2(self, t):
        r"""$g(t)^2 = 2\sigma(t)^2\log(\sigma_{\max}/\sigma_{\min})$."""
        return 2 * self._sigma(t) ** 2 * self._rate()

    def _inverse_lambda(self, lam):
        t = (-lam - math.log(self.sigma_min)) / self._rate()
        return jnp.clip(t, 0.0, self.T)

    @property
    def prior_std(self) -> float:
        r"""$\sigma(T)$ ($= \sigma_{\max}$ for the default $T = 1$)."""
        return float(self.sigma_min * (self.sigma_max / self.sigma_min) ** self.T)


class EDMSDE(AbstractSDE):
    r"""The SDE of Karras et al. 2022 ("EDM"), $\sigma(t) = t$:

    $$\mathrm{d}x = \sqrt{2t}\,\mathrm{d}W, \qquad t \in [0, T],\ T = \sigma_{\max}.$$

    Marginals: $\alpha(t) = 1$, $\sigma(t) = t$ (data at $t = 0$ is clean),
    $\lambda = -\log t$. Prior $\mathcal{N}(0, T^2 I)$. Time *is* the noise level, so
    $\varepsilon$ plays the role of EDM's $\sigma_{\min}$ (0.002 in the paper).
    """

    T: RealScalarLike = 80.0

    def __check_init__(self):
        check_T(self.T)

    def _alpha(self, t):
        return jnp.ones_like(t)

    def _alpha_at_T(self):
        return 1.0

    def _sigma(self, t):
        return t

    def _f(self, t):
        return jnp.zeros_like(t)

    def _g2(self, t):
        r"""$g(t)^2 = 2t$."""
        return 2 * t

    def _inverse_lambda(self, lam):
        return jnp.clip(jnp.exp(-lam), 0.0, self.T)

    @property
    def prior_std(self) -> float:
        r"""$T = \sigma_{\max}$."""
        return float(self.T) if is_concrete(self.T) else self.T


VPSDE.__init__.__doc__ = r"""**Arguments:**

- `beta_min`: $\beta(0)$, default 0.1 (must be $\ge 0$).
- `beta_max`: $\beta(1)$, default 20.0 (at least `beta_min`; equal for a constant
  $\beta$).
- `T`: final time, default 1.0.
"""
SubVPSDE.__init__.__doc__ = VPSDE.__init__.__doc__
VESDE.__init__.__doc__ = r"""**Arguments:**

- `sigma_min`: $\sigma(0)$, default 0.01 (must be $> 0$).
- `sigma_max`: $\sigma(1)$, the prior's std, default 50.0 (must exceed `sigma_min`).
- `T`: final time, default 1.0.
"""
EDMSDE.__init__.__doc__ = r"""**Arguments:**

- `T`: final time, equal to the largest noise level $\sigma_{\max}$ (default 80).
"""

r"""Forward noising processes $\mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}W$.

Every SDE here is linear with a scalar diffusion, so the perturbation kernel is
Gaussian in closed form,

$$p_t(x \mid x_0) = \mathcal{N}\big(x;\ \alpha(t)\,x_0,\ \sigma(t)^2 I\big),$$

and the drift is $f(x, t) = \frac{\mathrm{d}\log\alpha}{\mathrm{d}t}\,x$. The processes are
those of Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations" (VE, VP, sub-VP), with the conventions of the official
`score_sde` code.
"""

import abc
import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from ._checks import check_shape_arg, concrete_float
from ._custom_types import Data, KeyArray, RealScalarLike, Scalar
from ._misc import default_float


def _as_time(t: RealScalarLike) -> Scalar:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(default_float())
    return t


class AbstractSDE(eqx.Module):
    r"""Base class for a forward SDE $\mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}W$
    on $t \in [0, T]$ with Gaussian marginals $\mathcal{N}(\alpha(t) x_0, \sigma(t)^2 I)$.

    Subclasses provide the closed forms $\alpha(t)$, $\sigma(t)$, $g(t)$, the drift
    $f$, and the prior's standard deviation. Everything else (the marginal, prior
    samples and log-density) is shared.
    """

    T: eqx.AbstractVar[float]

    @abc.abstractmethod
    def alpha(self, t: RealScalarLike) -> Scalar:
        r"""Mean coefficient $\alpha(t)$ of $p_t(x \mid x_0)$."""

    @abc.abstractmethod
    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""Standard deviation $\sigma(t)$ of $p_t(x \mid x_0)$."""

    @abc.abstractmethod
    def drift(self, t: RealScalarLike, x: Data) -> Data:
        r"""Drift $f(x, t)$ of the forward SDE."""

    @abc.abstractmethod
    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""Diffusion coefficient $g(t)$ of the forward SDE."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        r"""Standard deviation $s$ of the prior $\mathcal{N}(0, s^2 I)$ at $t = T$."""

    def marginal(self, t: RealScalarLike, x0: Data) -> tuple[Data, Scalar]:
        r"""Mean and standard deviation of $p_t(x \mid x_0) = \mathcal{N}(\alpha(t) x_0,
        \sigma(t)^2 I)$.

        **Arguments:**

        - `t`: a scalar time in $[0, T]$.
        - `x0`: one clean example.

        **Returns:** `(mean, std)` with `mean = alpha(t) * x0` (shape of `x0`) and the
        scalar `std = sigma(t)`.
        """
        return self.alpha(t) * x0, self.sigma(t)

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
        d = z.size
        s2 = self.prior_std**2
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * jnp.sum(z**2) / s2

    def log_snr(self, t: RealScalarLike) -> Scalar:
        r"""Log signal-to-noise ratio $\lambda(t) = \log(\alpha(t)^2 / \sigma(t)^2)$."""
        return 2 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))


def _check_T(T: float) -> None:
    v = concrete_float("T", T)
    if v is not None and not (math.isfinite(v) and v > 0):
        raise ValueError(f"`T` must be finite and > 0, got {v}.")


class _AbstractBetaSDE(AbstractSDE):
    r"""Shared linear schedule $\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$."""

    beta_min: eqx.AbstractVar[float]
    beta_max: eqx.AbstractVar[float]

    def __check_init__(self):
        _check_T(self.T)
        bmin = concrete_float("beta_min", self.beta_min)
        bmax = concrete_float("beta_max", self.beta_max)
        if bmin is not None and not (math.isfinite(bmin) and bmin >= 0):
            raise ValueError(f"`beta_min` must be finite and >= 0, got {bmin}.")
        if bmax is not None and not math.isfinite(bmax):
            raise ValueError(f"`beta_max` must be finite, got {bmax}.")
        if bmin is not None and bmax is not None and not bmax > bmin:
            raise ValueError(
                f"`beta_max` must be greater than `beta_min`, got beta_min={bmin}, "
                f"beta_max={bmax}."
            )

    def beta(self, t: RealScalarLike) -> Scalar:
        r"""$\beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min})$."""
        t = _as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral_beta(self, t: RealScalarLike) -> Scalar:
        r"""$B(t) = \int_0^t \beta(s)\,\mathrm{d}s = \beta_{\min} t +
        \tfrac12 t^2 (\beta_{\max} - \beta_{\min})$."""
        t = _as_time(t)
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def alpha(self, t: RealScalarLike) -> Scalar:
        r"""$\alpha(t) = \exp(-\tfrac12 B(t))$."""
        return jnp.exp(-0.5 * self.integral_beta(t))

    def drift(self, t: RealScalarLike, x: Data) -> Data:
        r"""$f(x, t) = -\tfrac12 \beta(t)\, x$."""
        return -0.5 * self.beta(t).astype(jnp.result_type(x)) * x

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_AbstractBetaSDE):
    r"""Variance-preserving SDE (the continuous DDPM), Song et al. 2021:

    $$\mathrm{d}x = -\tfrac12\beta(t)\,x\,\mathrm{d}t + \sqrt{\beta(t)}\,\mathrm{d}W,
    \qquad \beta(t) = \beta_{\min} + t(\beta_{\max} - \beta_{\min}).$$

    Marginals: $\alpha(t) = e^{-B(t)/2}$, $\sigma(t) = \sqrt{1 - e^{-B(t)}}$ with
    $B(t) = \int_0^t \beta$. Prior $\mathcal{N}(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""$\sigma(t) = \sqrt{1 - e^{-B(t)}}$, computed with `expm1`."""
        return jnp.sqrt(-jnp.expm1(-self.integral_beta(t)))

    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""$g(t) = \sqrt{\beta(t)}$."""
        return jnp.sqrt(self.beta(t))


class SubVPSDE(_AbstractBetaSDE):
    r"""Sub-variance-preserving SDE, Song et al. 2021:

    $$\mathrm{d}x = -\tfrac12\beta(t)\,x\,\mathrm{d}t +
    \sqrt{\beta(t)\big(1 - e^{-2B(t)}\big)}\,\mathrm{d}W.$$

    Marginals: $\alpha(t) = e^{-B(t)/2}$, $\sigma(t) = 1 - e^{-B(t)}$ (always below the
    VP SDE's). Prior $\mathcal{N}(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""$\sigma(t) = 1 - e^{-B(t)}$, computed with `expm1`."""
        return -jnp.expm1(-self.integral_beta(t))

    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""$g(t) = \sqrt{\beta(t)(1 - e^{-2B(t)})}$."""
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2 * self.integral_beta(t)))


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE (continuous SMLD / NCSN), Song et al. 2021:

    $$\mathrm{d}x = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})}\,\mathrm{d}W,
    \qquad \sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t.$$

    Marginals: $\alpha(t) = 1$ and std $\sigma(t)$ as above: this is the convention
    of the official score_sde code, in which data at $t = 0$ already counts as
    perturbed by $\sigma_{\min}$. Prior $\mathcal{N}(0, \sigma_{\max}^2 I)$.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __check_init__(self):
        _check_T(self.T)
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

    def alpha(self, t: RealScalarLike) -> Scalar:
        r"""$\alpha(t) = 1$."""
        return jnp.ones_like(_as_time(t))

    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""$\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^{t}$."""
        t = _as_time(t)
        return self.sigma_min * jnp.exp(t * math.log(self.sigma_max / self.sigma_min))

    def drift(self, t: RealScalarLike, x: Data) -> Data:
        r"""$f(x, t) = 0$."""
        return jnp.zeros_like(x)

    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""$g(t) = \sigma(t)\sqrt{2\log(\sigma_{\max}/\sigma_{\min})}$."""
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    @property
    def prior_std(self) -> float:
        r"""$\sigma(T)$ ($= \sigma_{\max}$ for the default $T = 1$)."""
        return float(self.sigma_min * (self.sigma_max / self.sigma_min) ** self.T)


VPSDE.__init__.__doc__ = r"""**Arguments:**

- `beta_min`: $\beta(0)$, default 0.1 (must be $\ge 0$).
- `beta_max`: $\beta(1)$, default 20.0 (must exceed `beta_min`).
- `T`: final time, default 1.0.
"""
SubVPSDE.__init__.__doc__ = VPSDE.__init__.__doc__
VESDE.__init__.__doc__ = r"""**Arguments:**

- `sigma_min`: $\sigma(0)$, default 0.01 (must be $> 0$).
- `sigma_max`: $\sigma(1)$, the prior's std, default 50.0 (must exceed `sigma_min`).
- `T`: final time, default 1.0.
"""


class EDMSDE(AbstractSDE):
    r"""The SDE of Karras et al. 2022 ("EDM"), $\sigma(t) = t$:

    $$\mathrm{d}x = \sqrt{2t}\,\mathrm{d}W, \qquad t \in [0, T],\ T = \sigma_{\max}.$$

    Marginals: $\alpha(t) = 1$, $\sigma(t) = t$ (data at $t = 0$ is clean). Prior
    $\mathcal{N}(0, T^2 I)$. Time *is* the noise level, so $\varepsilon$ plays the role of
    EDM's $\sigma_{\min}$ (0.002 in the paper).
    """

    T: float = 80.0

    def __check_init__(self):
        _check_T(self.T)

    def alpha(self, t: RealScalarLike) -> Scalar:
        r"""$\alpha(t) = 1$."""
        return jnp.ones_like(_as_time(t))

    def sigma(self, t: RealScalarLike) -> Scalar:
        r"""$\sigma(t) = t$."""
        return _as_time(t)

    def drift(self, t: RealScalarLike, x: Data) -> Data:
        r"""$f(x, t) = 0$."""
        return jnp.zeros_like(x)

    def diffusion(self, t: RealScalarLike) -> Scalar:
        r"""$g(t) = \sqrt{2t}$."""
        return jnp.sqrt(2 * _as_time(t))

    @property
    def prior_std(self) -> float:
        r"""$T = \sigma_{\max}$."""
        return float(self.T)


EDMSDE.__init__.__doc__ = r"""**Arguments:**

- `T`: final time, equal to the largest noise level $\sigma_{\max}$ (default 80).
"""

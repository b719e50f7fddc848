r"""Interpolants (flow matching): paths $x_t = \alpha(t)\,x_0 + \sigma(t)\,\varepsilon$
that reach pure noise at $t = T$, $\alpha(T) = 0$.

An interpolant has exactly the marginals of the linear SDE with
$f = \alpha'/\alpha$ and $g^2 = (\sigma^2)' - 2(\alpha'/\alpha)\sigma^2$, so in sdegen
**an interpolant is an SDE**: [`sdegen.RectifiedFlow`][] and
[`sdegen.CosineInterpolant`][] are [`sdegen.AbstractSDE`][]s, and every sampler,
the likelihood, guidance and inpainting work on them. Time runs data ($t = 0$) to
noise ($t = T$), as everywhere in sdegen; `flow_matching` and torchcfm run noise to
data ($\tau = 1 - t/T$).

At $t = T$ the drift $f$ and $g^2$ are infinite (IEEE $\pm\infty$, never NaN) while the
velocity $v = \alpha' D + \sigma'\hat\varepsilon$ stays finite; the prior
$\mathcal{N}(0, \sigma(T)^2 I)$ is exact, whatever the data. $\alpha(T)$ is exactly 0
in floating point: the cosine path computes $\alpha = \sin(\pi(T - t)/2T)$, not
$\cos(\pi t/2T)$ (whose value at $T$ is $6\times10^{-17}$).
"""

import math

import jax
import jax.numpy as jnp

from .._core._custom_types import RealScalarLike
from ._sde import AbstractSDE, check_T


class RectifiedFlow(AbstractSDE):
    r"""The straight path of rectified flow / conditional flow matching ("CondOT",
    Liu et al. 2022; Lipman et al. 2022):

    $$x_t = \Big(1 - \frac{t}{T}\Big)x_0 + \frac{t}{T}\,\varepsilon,\qquad
    \alpha' = -\frac1T,\quad \sigma' = \frac1T,\quad v = \frac{\varepsilon - x_0}{T}.$$

    As an SDE: $f = -1/(T - t)$, $g^2 = 2t/(T(T - t))$, both infinite at $t = T$;
    $\lambda = \log((T - t)/t)$, inverted by $t = T/(1 + e^{\lambda})$. Prior
    $\mathcal{N}(0, I)$, exact.
    """

    T: RealScalarLike = 1.0

    def __check_init__(self):
        check_T(self.T)

    def _alpha(self, t):
        r"""$\alpha = (T - t)/T$: exactly 0 at $t = T$."""
        return (self.T - t) / self.T

    def _alpha_at_T(self):
        return 0.0

    def _sigma(self, t):
        return t / self.T

    def _f(self, t):
        r"""$f = \alpha'/\alpha = -1/(T - t)$ ($-\infty$ at $T$)."""
        return -1 / (self.T - t)

    def _g2(self, t):
        r"""$g^2 = 2t/(T(T - t))$ ($+\infty$ at $T$)."""
        return 2 * t / (self.T * (self.T - t))

    def _inverse_lambda(self, lam):
        r"""$t = T\,\mathrm{sigmoid}(-\lambda)$."""
        return jnp.clip(self.T * jax.nn.sigmoid(-lam), 0.0, self.T)

    @property
    def prior_std(self) -> float:
        r"""$\sigma(T) = 1$."""
        return 1.0


class CosineInterpolant(AbstractSDE):
    r"""The cosine path (the trigonometric interpolant of Albergo & Vanden-Eijnden
    2023; `flow_matching`'s `CosineScheduler`):

    $$x_t = \cos\Big(\frac{\pi t}{2T}\Big)x_0 + \sin\Big(\frac{\pi t}{2T}\Big)
    \varepsilon,\qquad \alpha' = -\frac{\pi}{2T}\sigma,\quad
    \sigma' = \frac{\pi}{2T}\alpha,$$

    variance preserving ($\alpha^2 + \sigma^2 = 1$). As an SDE:
    $f = -\tfrac{\pi}{2T}\tan\tfrac{\pi t}{2T}$, $g^2 = \tfrac{\pi}{T}
    \tan\tfrac{\pi t}{2T}$ (infinite at $t = T$); $\lambda = \log\cot(\pi t/2T)$,
    inverted by $t = \tfrac{2T}{\pi}\arctan e^{-\lambda}$. $\alpha$ is computed as
    $\sin(\pi(T - t)/2T)$, exactly 0 at $t = T$. Prior $\mathcal{N}(0, I)$, exact.
    """

    T: RealScalarLike = 1.0

    def __check_init__(self):
        check_T(self.T)

    def _rate(self):
        return 0.5 * math.pi / self.T

    def _alpha(self, t):
        r"""$\alpha = \sin(\pi(T - t)/2T) = \cos(\pi t/2T)$, exactly 0 at $T$."""
        return jnp.sin(self._rate() * (self.T - t))

    def _alpha_at_T(self):
        return 0.0

    def _sigma(self, t):
        return jnp.sin(self._rate() * t)

    def _f(self, t):
        r"""$f = -\tfrac{\pi}{2T}\sigma/\alpha$ ($-\infty$ at $T$)."""
        return -self._rate() * self._sigma(t) / self._alpha(t)

    def _g2(self, t):
        r"""$g^2 = \tfrac{\pi}{T}\sigma/\alpha$ ($+\infty$ at $T$)."""
        return 2 * self._rate() * self._sigma(t) / self._alpha(t)

    def _inverse_lambda(self, lam):
        return jnp.clip(jnp.arctan(jnp.exp(-lam)) / self._rate(), 0.0, self.T)

    @property
    def prior_std(self) -> float:
        r"""$\sigma(T) = 1$."""
        return 1.0


RectifiedFlow.__init__.__doc__ = r"""**Arguments:**

- `T`: the final time (default 1); the velocity carries the factor $1/T$.
"""
CosineInterpolant.__init__.__doc__ = RectifiedFlow.__init__.__doc__

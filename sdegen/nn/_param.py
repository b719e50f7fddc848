r"""Parametrisations: turn a network $F$ into a score
$s(t, x) \approx \nabla_x\log p_t(x)$.

For a linear SDE with perturbation kernel $x_t = \alpha(t) x_0 + \sigma(t)\varepsilon$,
the score, the noise and the clean data are affine in one another (Tweedie's formula):

$$s = -\frac{\varepsilon}{\sigma},\qquad
\hat x_0 = \mathbb{E}[x_0 \mid x_t] = \frac{x + \sigma^2 s}{\alpha},\qquad
\hat\varepsilon = -\sigma s.$$

Every parametrisation here writes the score as one affine function of the network's
output,

$$s(t, x) = a(t)\,x + b(t)\,F\big(c_{\text{noise}}(t),\ c_{\text{in}}(t)\,x\big),$$

so [`sdegen.nn.AbstractParametrisation`][] implements `__call__` once and each
concrete class gives its four coefficients and its native prediction (`predicts`:
score, noise, data or velocity). `denoise`, `eps` and `velocity` convert the native
prediction by the one table of `sdegen/_processes/_conversions.py` (see the concepts
page "Flow matching and interpolants"), and the samplers use it directly: the
probability-flow ODE of a [`sdegen.nn.VelocityParam`][] integrates $v$ itself.
"""

import abc
import math
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._custom_types import KeyArray, RealScalarLike, Scalar
from .._processes._conversions import AbstractPredictor, convert, rates
from .._processes._sde import AbstractSDE, as_time


def _check_net(net) -> None:
    if not callable(net):
        raise ValueError(
            f"`net` must be a callable net(t, x) -> Array, got {type(net).__name__}."
        )


def _check_sde(sde, optional: bool = False) -> None:
    if sde is None and optional:
        return
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"`sde` must be an sdegen.AbstractSDE (e.g. sdegen.VPSDE()), got "
            f"{type(sde).__name__}."
        )


def _call_net(net, t, x, label, key):
    kwargs: dict[str, Any] = {}
    if label is not None:
        kwargs["label"] = label
    if key is not None:
        kwargs["key"] = key
    return net(t, x, **kwargs)


class AbstractParametrisation(AbstractPredictor):
    r"""A score model $s(t, x) = a(t)\,x + b(t)\,F(c_{\text{noise}}(t),
    c_{\text{in}}(t)\,x)$ built from a network $F$ called as `net(t, x, *, label,
    key)`.

    Subclasses give the coefficients in `score_coefficients` and the native
    prediction (`predicts`, `prediction`); the score (`__call__`), the data prediction
    (`denoise`), the noise prediction (`eps`) and the velocity (`velocity`) are
    shared.
    Called unbatched as `param(t, x, *, label=None, key=None)`, like any score
    function.
    """

    net: eqx.AbstractVar[Callable]
    sde: eqx.AbstractVar[AbstractSDE | None]

    @abc.abstractmethod
    def score_coefficients(
        self, t: RealScalarLike
    ) -> tuple[Scalar, Scalar, Scalar, Scalar]:
        r"""The coefficients $(a, b, c_{\text{in}}, c_{\text{noise}})$ at time $t$,
        with $s(t, x) = a\,x + b\,F(c_{\text{noise}}, c_{\text{in}} x)$."""

    def __call__(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, "*data"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, "*data"]:
        r"""The score $s(t, x) \approx \nabla_x \log p_t(x)$.

        **Arguments:**

        - `t`: scalar time.
        - `x`: one example.
        - `label`: optional class label, passed on to the network (`None`: not passed,
          which conditional sdegen networks read as the null class).
        - `key`: optional PRNG key, passed on to the network (dropout).

        **Returns:** an array of `x`'s shape.
        """
        x = jnp.asarray(x)
        a, b, c_in, c_noise = self.score_coefficients(t)
        return a * x + b * self._net_output(c_noise, c_in * x, label, key)

    def _net_output(self, c_noise, x_in, label, key):
        f = jnp.asarray(_call_net(self.net, c_noise, x_in, label, key))
        if f.shape != x_in.shape:
            raise ValueError(
                f"`net` must return an array of the input's shape {x_in.shape}, got "
                f"shape {f.shape}."
            )
        return f

    def _convert(self, what, dst, t, x, label, key):
        sde = self._sde_or_raise(what)
        x = jnp.asarray(x)
        value = self.prediction(t, x, label=label, key=key)
        return convert(sde, as_time(t), x, value, self.predicts, dst)

    def _sde_or_raise(self, what: str) -> AbstractSDE:
        if self.sde is None:
            raise ValueError(
                f"`{what}` needs the SDE's alpha(t) and sigma(t): build the "
                f"parametrisation with `sde=...`."
            )
        return self.sde

    def denoise(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, "*data"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, "*data"]:
        r"""The data prediction $\hat x_0 = \mathbb{E}[x_0 \mid x_t = x]$, converted from
        the native prediction (from a score: Tweedie's $(x + \sigma^2 s)/\alpha$, Efron
        2011; from a velocity: $(\sigma' x - \sigma v)/(\alpha\sigma' - \alpha'\sigma)$,
        finite where $\alpha = 0$)."""
        return self._convert("denoise", "x0", t, x, label, key)

    def eps(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, "*data"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, "*data"]:
        r"""The noise prediction $\hat\varepsilon(t, x) = -\sigma(t)\, s(t, x)$, the
        estimate of $\varepsilon$ in $x = \alpha(t) x_0 + \sigma(t)\varepsilon$."""
        return self._convert("eps", "eps", t, x, label, key)

    def velocity(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, "*data"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, "*data"]:
        r"""The velocity $v = \alpha' \hat x_0 + \sigma'\hat\varepsilon$, the
        probability-flow ODE's drift $\mathrm{d}x/\mathrm{d}t$."""
        return self._convert("velocity", "velocity", t, x, label, key)


class ScoreParam(AbstractParametrisation):
    r"""Direct score parametrisation: $s(t, x) = F(t, x)$ (Song & Ermon 2019;
    Song et al. 2021). `sde` is optional and only needed for `denoise` and `eps`."""

    predicts: ClassVar[str] = "score"
    net: Callable
    sde: AbstractSDE | None = None

    def __check_init__(self):
        _check_net(self.net)
        _check_sde(self.sde, optional=True)

    def score_coefficients(self, t):
        t = as_time(t)
        return jnp.zeros_like(t), jnp.ones_like(t), jnp.ones_like(t), t

    def prediction(self, t, x, *, label=None, key=None):
        """The score $F(t, x)$."""
        return self(t, x, label=label, key=key)


class NoiseParam(AbstractParametrisation):
    r"""Noise-prediction parametrisation (Ho et al. 2020): the network predicts
    $\varepsilon$ in $x = \alpha(t) x_0 + \sigma(t)\varepsilon$, and
    $s(t, x) = -F(t, x)/\sigma(t)$."""

    predicts: ClassVar[str] = "eps"
    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_net(self.net)
        _check_sde(self.sde)

    def score_coefficients(self, t):
        t = as_time(t)
        return jnp.zeros_like(t), -1 / self.sde._sigma(t), jnp.ones_like(t), t

    def prediction(self, t, x, *, label=None, key=None):
        r"""The noise prediction $F(t, x)$."""
        x = jnp.asarray(x)
        return self._net_output(as_time(t), x, label, key)


class VelocityParam(AbstractParametrisation):
    r"""Velocity parametrisation, the target of flow matching (Lipman et al. 2022; Liu
    et al. 2022; SiT): the network predicts
    $v = \mathbb{E}[\alpha'(t) x_0 + \sigma'(t)\varepsilon \mid x_t = x]$, the
    probability-flow ODE's drift. On the straight path [`sdegen.RectifiedFlow`][] that
    is $(\varepsilon - x_0)/T$; on VP paths Salimans & Ho's $v$-prediction
    $\alpha\varepsilon - \sigma x_0$ times $\sigma'/\alpha$ (see the concepts page).

    The score is $s = (\alpha v - \alpha' x)/(\sigma(\alpha'\sigma -
    \alpha\sigma'))$, finite at $t = T$ where $\alpha = 0$ ($s = -x/\sigma^2$ there);
    the samplers integrate $v$ itself (no division by $\sigma$ or $\alpha$).
    """

    predicts: ClassVar[str] = "velocity"
    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_net(self.net)
        _check_sde(self.sde)

    def score_coefficients(self, t):
        r"""$a = -\alpha'/c$, $b = \alpha/c$ with $c = \sigma(\alpha'\sigma -
        \alpha\sigma')$; the network sees $(t, x)$."""
        t = as_time(t)
        alpha, sigma, da, ds = rates(self.sde, t)
        c = sigma * (da * sigma - alpha * ds)
        return -da / c, alpha / c, jnp.ones_like(t), t

    def prediction(self, t, x, *, label=None, key=None):
        r"""The velocity $F(t, x)$."""
        x = jnp.asarray(x)
        return self._net_output(as_time(t), x, label, key)


class EDMPreconditioner(AbstractParametrisation):
    r"""Data-prediction parametrisation with the preconditioning of Karras et al. 2022
    ("Elucidating the Design Space of Diffusion-Based Generative Models", EDM),
    written for a general kernel $x = \alpha(t) x_0 + \sigma(t)\varepsilon$.

    With the scaled input $\tilde x = x/\alpha$ and noise level
    $\tilde\sigma = \sigma/\alpha$ (so $\tilde x = x_0 + \tilde\sigma\varepsilon$),
    the denoiser is

    $$D(t, x) = c_{\text{skip}}(\tilde\sigma)\,\tilde x +
    c_{\text{out}}(\tilde\sigma)\,F\big(c_{\text{noise}}(\tilde\sigma),\
    c_{\text{in}}(\tilde\sigma)\,\tilde x\big),$$

    $$c_{\text{skip}} = \frac{\sigma_d^2}{\tilde\sigma^2 + \sigma_d^2},\quad
    c_{\text{out}} = \frac{\tilde\sigma\,\sigma_d}{\sqrt{\tilde\sigma^2 + \sigma_d^2}},
    \quad c_{\text{in}} = \frac{1}{\sqrt{\tilde\sigma^2 + \sigma_d^2}},\quad
    c_{\text{noise}} = \tfrac14\log\tilde\sigma,$$

    and the score is $s(t, x) = (\alpha D - x)/\sigma^2$. Note that the network
    is called with $c_{\text{noise}}$ in place of $t$. For the VE SDE ($\alpha = 1$)
    this is exactly EDM's Table 1.
    """

    predicts: ClassVar[str] = "x0"
    net: Callable
    sde: AbstractSDE
    sigma_data: float = 0.5

    def __check_init__(self):
        _check_net(self.net)
        _check_sde(self.sde)
        sd = self.sigma_data
        if not (isinstance(sd, (int, float)) and math.isfinite(sd) and sd > 0):
            raise ValueError(f"`sigma_data` must be a finite float > 0, got {sd!r}.")

    def sigma_tilde(self, t: RealScalarLike) -> Scalar:
        r"""$\tilde\sigma(t) = \sigma(t)/\alpha(t)$, EDM's noise level of $x/\alpha$."""
        t = as_time(t)
        return self.sde._sigma(t) / self.sde._alpha(t)

    def c_skip(self, t: RealScalarLike) -> Scalar:
        r"""$c_{\text{skip}} = \sigma_d^2/(\tilde\sigma^2 + \sigma_d^2)$."""
        st = self.sigma_tilde(t)
        return self.sigma_data**2 / (st**2 + self.sigma_data**2)

    def c_out(self, t: RealScalarLike) -> Scalar:
        r"""$c_{\text{out}} = \tilde\sigma\sigma_d /
        \sqrt{\tilde\sigma^2 + \sigma_d^2}$."""
        st = self.sigma_tilde(t)
        return st * self.sigma_data / jnp.sqrt(st**2 + self.sigma_data**2)

    def c_in(self, t: RealScalarLike) -> Scalar:
        r"""$c_{\text{in}} = 1/\sqrt{\tilde\sigma^2 + \sigma_d^2}$ (applied to
        $\tilde x = x/\alpha$)."""
        st = self.sigma_tilde(t)
        return 1 / jnp.sqrt(st**2 + self.sigma_data**2)

    def c_noise(self, t: RealScalarLike) -> Scalar:
        r"""$c_{\text{noise}} = \tfrac14\log\tilde\sigma$."""
        t = as_time(t)
        return 0.25 * (jnp.log(self.sde._sigma(t)) - jnp.log(self.sde._alpha(t)))

    def score_coefficients(self, t):
        r"""From $s = (\alpha D - x)/\sigma^2$: $a = -1/(\alpha^2(\tilde\sigma^2 +
        \sigma_d^2)) = -1/(\sigma^2 + \alpha^2\sigma_d^2)$, $b = \alpha c_{\text{out}}
        /\sigma^2 = \sigma_d/(\sigma\sqrt{\tilde\sigma^2 + \sigma_d^2})$, and the
        input scale $c_{\text{in}}/\alpha = 1/\sqrt{\sigma^2 + \alpha^2\sigma_d^2}$."""
        t = as_time(t)
        alpha, sigma = self.sde._alpha(t), self.sde._sigma(t)
        sd2 = self.sigma_data**2
        v = sigma**2 + alpha**2 * sd2
        a = -1 / v
        b = self.sigma_data * alpha / (sigma * jnp.sqrt(v))
        return a, b, 1 / jnp.sqrt(v), self.c_noise(t)

    def prediction(self, t, x, *, label=None, key=None):
        r"""The denoiser $D = c_{\text{skip}}\tilde x + c_{\text{out}}
        F(c_{\text{noise}}, c_{\text{in}}\tilde x)$, $\tilde x = x/\alpha$."""
        x = jnp.asarray(x)
        t = as_time(t)
        xt = x / self.sde._alpha(t)
        f = self._net_output(self.c_noise(t), self.c_in(t) * xt, label, key)
        return self.c_skip(t) * xt + self.c_out(t) * f


ScoreParam.__init__.__doc__ = r"""**Arguments:**

- `net`: a network (or any callable) `net(t, x)` returning the score.
- `sde`: optional [`sdegen.AbstractSDE`][], needed for `denoise` and `eps`.
"""
NoiseParam.__init__.__doc__ = r"""**Arguments:**

- `net`: a network `net(t, x)` predicting the noise $\varepsilon$.
- `sde`: the [`sdegen.AbstractSDE`][] whose $\sigma(t)$ converts noise to score.
"""
VelocityParam.__init__.__doc__ = r"""**Arguments:**

- `net`: a network `net(t, x)` predicting the velocity $v$.
- `sde`: the path ([`sdegen.RectifiedFlow`][], [`sdegen.CosineInterpolant`][] or any
  [`sdegen.AbstractSDE`][]) whose $\alpha, \sigma, \alpha', \sigma'$ convert $v$.
"""
EDMPreconditioner.__init__.__doc__ = r"""**Arguments:**

- `net`: the raw network $F$, called as `net(c_noise, c_in * x / alpha)`.
- `sde`: the [`sdegen.AbstractSDE`][] giving $\alpha(t)$ and $\sigma(t)$.
- `sigma_data`: the data's standard deviation $\sigma_d$, default 0.5 (EDM).
"""

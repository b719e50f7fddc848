r"""Loss weightings $\lambda(t)$ of denoising score matching and how the noise times
are drawn.

The continuous-time DSM objective (Song et al. 2021, eq. 7) is

$$\mathcal{L} = \mathbb{E}_{t \sim p(t)}\,\lambda(t)\,\mathbb{E}_{x_0, z}
\big\lVert s(t, x_t) + z/\sigma(t)\big\rVert^2,$$

so a training recipe is a weighting $\lambda$ and a time density $p(t)$. Both are
small equinox modules, resolved from their names (`"sigma2"`, `"edm"`,
`"lognormal"`, ...) through the one name table `sdegen._engine._solver_table.REGISTRY`.
Every method here calls the SDE's unchecked closed forms (`sde._alpha`,
`sde._sigma`, `sde._g2`): the times they see lie in $[\varepsilon, T]$ by
construction, so the range check of the public methods would only cost time in the
training step.
"""

import abc
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..._core._checks import check_positive, concrete_float
from ..._core._custom_types import Scalar
from ..._engine._solver_table import lookup
from ..._processes._sde import AbstractSDE, as_time


# ---------------------------------------------------------------- weightings


class AbstractWeighting(eqx.Module):
    r"""A DSM weighting $\lambda(t)$, called as `weighting(sde, t)`.

    `dsm_factor(sde, t)` is $\lambda(t)/\sigma(t)^2$, the factor in front of
    $\lVert\sigma s + z\rVert^2$ (the form the loss computes, which stays finite as
    $\sigma \to 0$); subclasses with a closed form for it override it.
    """

    @abc.abstractmethod
    def __call__(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        r"""$\lambda(t)$."""

    def dsm_factor(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        r"""$\lambda(t)/\sigma(t)^2$."""
        return self(sde, t) / sde._sigma(as_time(t)) ** 2


class Sigma2Weighting(AbstractWeighting):
    r"""$\lambda(t) = \sigma(t)^2$ (Song et al. 2021; Ho et al. 2020's
    $\varepsilon$-prediction loss): the loss is $\lVert\sigma s + z\rVert^2 =
    \lVert\hat\varepsilon - z\rVert^2$."""

    def __call__(self, sde, t):
        return sde._sigma(as_time(t)) ** 2

    def dsm_factor(self, sde, t):
        return jnp.ones_like(as_time(t))


class LikelihoodWeighting(AbstractWeighting):
    r"""$\lambda(t) = g(t)^2$, for which the DSM objective bounds the negative
    log-likelihood (Song, Durkan, Murray & Ermon 2021, "Maximum Likelihood Training
    of Score-Based Diffusion Models")."""

    def __call__(self, sde, t):
        return sde._g2(as_time(t))


class EDMWeighting(AbstractWeighting):
    r"""The loss weighting of Karras et al. 2022 ("Elucidating the Design Space of
    Diffusion-Based Generative Models", EDM, eq. 8 and Table 1),
    $\lambda_{\text{EDM}}(\tilde\sigma) = (\tilde\sigma^2 + \sigma_d^2)/
    (\tilde\sigma\sigma_d)^2$ on $\lVert D - x_0\rVert^2$, for the noise-to-signal
    ratio $\tilde\sigma = \sigma/\alpha$.

    In score form: with Tweedie's denoiser $D = (x_t + \sigma^2 s)/\alpha$ and
    $x_t = \alpha x_0 + \sigma z$, $D - x_0 = (\sigma/\alpha)(\sigma s + z) =
    \tilde\sigma(\sigma s + z)$, so

    $$\lambda_{\text{EDM}}\lVert D - x_0\rVert^2 =
    \frac{\tilde\sigma^2 + \sigma_d^2}{\sigma_d^2}\,\lVert\sigma s + z\rVert^2,
    \qquad \lambda(t) = \sigma^2\,\frac{\tilde\sigma^2 + \sigma_d^2}{\sigma_d^2}.$$

    With [`sdegen.nn.EDMPreconditioner`][] (the same $\sigma_d$) this is EDM's
    unit-weight loss $\lVert F - F_{\text{target}}\rVert^2$ on the raw network.
    """

    sigma_data: float = 0.5

    def __check_init__(self):
        check_positive("sigma_data", self.sigma_data)

    def __call__(self, sde, t):
        t = as_time(t)
        return sde._sigma(t) ** 2 * self.dsm_factor(sde, t)

    def dsm_factor(self, sde, t):
        t = as_time(t)
        st2 = (sde._sigma(t) / sde._alpha(t)) ** 2
        sd2 = self.sigma_data**2
        return (st2 + sd2) / sd2


class _CallableWeighting(AbstractWeighting):
    fn: Callable[[Any], Any]

    def __call__(self, sde, t):
        return jnp.asarray(self.fn(t))


Weighting = str | AbstractWeighting | Callable[[Any], Any]
r"""A name of [`sdegen.WEIGHTINGS`][], an [`sdegen.AbstractWeighting`][], or a callable
$\lambda(t)$ of the time alone."""


def resolve_weighting(weighting: Any) -> AbstractWeighting:
    """The weighting object of a name, an object, or a callable $\\lambda(t)$."""
    if isinstance(weighting, AbstractWeighting):
        return weighting
    if isinstance(weighting, str) or not callable(weighting):
        return lookup("weighting", weighting, arg="weighting").make()
    return _CallableWeighting(weighting)


# ---------------------------------------------------------------- time sampling


class AbstractTimeSampling(eqx.Module):
    r"""How DSM draws its time $t \in [\varepsilon, T]$: `sample(sde, u, eps)` maps
    one uniform $u \in [0, 1)$ to `(t, w)` by an inverse CDF, where `w` is the
    factor that multiplies the example's loss (1 unless the draw is an unbiased
    importance-sampled version of $t \sim \mathcal{U}(\varepsilon, T)$). Drawing
    through $u$ lets the batch losses stratify any of them (`stratified=True`)."""

    @abc.abstractmethod
    def sample(
        self, sde: AbstractSDE, u: Scalar, eps: Any
    ) -> tuple[Scalar, Scalar]:
        """`(t, w)` for one uniform `u`."""

    def prepare(self, sde: AbstractSDE, eps: Any, dtype: Any) -> "AbstractTimeSampling":
        """Return the sampler with anything it precomputes for `(sde, eps)`."""
        return self


class UniformTimes(AbstractTimeSampling):
    r"""$t \sim \mathcal{U}(\varepsilon, T)$, $t = \varepsilon + (T - \varepsilon)u$
    (Song et al. 2021)."""

    def sample(self, sde, u, eps):
        return eps + (sde.T - eps) * u, jnp.ones_like(u)


class ImportanceTimes(AbstractTimeSampling):
    r"""Importance sampling of $t \sim \mathcal{U}(\varepsilon, T)$ for the likelihood
    weighting (Song, Durkan, Murray & Ermon 2021): $t$ is drawn from
    $q(t) \propto g(t)^2/\sigma(t)^2$ (piecewise uniform on a fine geometric grid
    $t_i = \varepsilon(T/\varepsilon)^{i/n}$, with trapezoid cell masses computed in
    float64 when the sampler is prepared) and the loss is multiplied by
    $w = 1/((T - \varepsilon) q(t))$, so the expectation is unchanged."""

    num_cells: int = eqx.field(default=2048, static=True)
    knots: Array | None = None
    cdf: Array | None = None

    def prepare(self, sde, eps, dtype):
        v = concrete_float("eps", eps)
        if v is not None:
            knots = v * np.exp(np.linspace(0.0, 1.0, self.num_cells + 1)
                               * math.log(sde.T / v))  # fmt: skip
            knots[-1] = sde.T
            with jax.ensure_compile_time_eval():  # constants, also under jit
                dens = jax.vmap(lambda s: sde._g2(s) / sde._sigma(s) ** 2)(
                    jnp.asarray(knots))  # fmt: skip
            dens = np.asarray(dens, np.float64)
            cell = 0.5 * (dens[1:] + dens[:-1]) * np.diff(knots)
            cdf = np.concatenate([[0.0], np.cumsum(cell)])
            knots, cdf = jnp.asarray(knots, dtype), jnp.asarray(cdf / cdf[-1], dtype)
        else:  # a traced eps: the same construction in JAX
            e = jnp.asarray(eps, dtype)
            grid = jnp.linspace(0.0, 1.0, self.num_cells + 1, dtype=dtype)
            knots = (e * jnp.exp(grid * jnp.log(sde.T / e))).at[-1].set(sde.T)
            dens = jax.vmap(lambda s: sde._g2(s) / sde._sigma(s) ** 2)(knots)
            cell = 0.5 * (dens[1:] + dens[:-1]) * jnp.diff(knots)
            cdf = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(cell)])
            cdf = cdf / cdf[-1]
        return ImportanceTimes(self.num_cells, knots, cdf)

    def sample(self, sde, u, eps):
        if self.knots is None or self.cdf is None:
            raise ValueError("ImportanceTimes must be prepared (`.prepare`) first.")
        n = self.knots.shape[0] - 1
        i = jnp.clip(jnp.searchsorted(self.cdf, u, side="right") - 1, 0, n - 1)
        mass = self.cdf[i + 1] - self.cdf[i]
        width = self.knots[i + 1] - self.knots[i]
        frac = jnp.clip((u - self.cdf[i]) / mass, 0.0, 1.0)
        t = self.knots[i] + frac * width
        return t, 1 / ((sde.T - eps) * (mass / width))


class LogNormalTimes(AbstractTimeSampling):
    r"""EDM's noise distribution (Karras et al. 2022, §5 and Table 1):
    $\ln\tilde\sigma \sim \mathcal{N}(P_{\text{mean}}, P_{\text{std}}^2)$ for the
    noise-to-signal ratio $\tilde\sigma = \sigma/\alpha$, mapped to the time
    $t = \lambda^{-1}(-\ln\tilde\sigma)$ of the SDE (`sde.inverse_lambda`, since
    $\lambda(t) = \log(\alpha/\sigma) = -\ln\tilde\sigma$) and clipped to
    $[\varepsilon, T]$. This changes the objective (it is not an unbiased draw of
    $t \sim \mathcal{U}(\varepsilon, T)$): it spends the training on the noise levels
    that matter most for sample quality."""

    p_mean: float = -1.2
    p_std: float = 1.2

    def __check_init__(self):
        if concrete_float("p_mean", self.p_mean) is not None and not math.isfinite(
            float(self.p_mean)
        ):
            raise ValueError(f"`p_mean` must be finite, got {self.p_mean!r}.")
        check_positive("p_std", self.p_std)

    def sample(self, sde, u, eps):
        tiny = jnp.finfo(jnp.result_type(u)).tiny
        z = jax.scipy.special.ndtri(jnp.clip(u, tiny, 1 - jnp.finfo(u.dtype).epsneg))
        t = jnp.clip(sde._inverse_lambda(-(self.p_mean + self.p_std * z)), eps, sde.T)
        return t.astype(u.dtype), jnp.ones_like(u)


class LogitNormalTimes(AbstractTimeSampling):
    r"""Stable Diffusion 3's logit-normal times (Esser et al. 2024, "Scaling
    Rectified Flow Transformers for High-Resolution Image Synthesis", §3.1):
    $\operatorname{logit}(t/T) \sim \mathcal{N}(m, s^2)$, i.e.
    $t = T\,\operatorname{sigmoid}(m + s\,\Phi^{-1}(u))$, clipped to
    $[\varepsilon, T]$, $w = 1$. Its density
    $p(t) = \frac{1}{s\sqrt{2\pi}}\frac{T}{t(T - t)}
    \exp\!\big(-(\operatorname{logit}(t/T) - m)^2/2s^2\big)$ puts the training on
    the middle of the path (with $m > 0$, nearer the noise). Like
    [`sdegen.LogNormalTimes`][] it changes the objective (it is not an unbiased
    draw of $t \sim \mathcal{U}(\varepsilon, T)$); it works with every loss and SDE."""

    m: float = 0.0
    s: float = 1.0

    def __check_init__(self):
        if concrete_float("m", self.m) is not None and not math.isfinite(float(self.m)):
            raise ValueError(f"`m` must be finite, got {self.m!r}.")
        check_positive("s", self.s)

    def sample(self, sde, u, eps):
        tiny = jnp.finfo(jnp.result_type(u)).tiny
        z = jax.scipy.special.ndtri(jnp.clip(u, tiny, 1 - jnp.finfo(u.dtype).epsneg))
        t = jnp.clip(sde.T * jax.nn.sigmoid(self.m + self.s * z), eps, sde.T)
        return t.astype(u.dtype), jnp.ones_like(u)


TimeSampling = str | AbstractTimeSampling
"""A name of [`sdegen.TIME_SAMPLINGS`][] or an [`sdegen.AbstractTimeSampling`][]."""


def resolve_times(times: Any, importance_sampling: bool) -> AbstractTimeSampling:
    if importance_sampling:
        if times not in ("uniform", "importance") and not isinstance(
            times, ImportanceTimes
        ):
            raise ValueError(
                "`importance_sampling=True` is the same as `times='importance'`; it "
                f"cannot be combined with `times={times!r}`."
            )
        times = "importance"
    if isinstance(times, AbstractTimeSampling):
        return times
    return lookup("time", times, arg="times").make()

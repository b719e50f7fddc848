r"""Conditional flow matching (Lipman et al. 2023; Liu et al. 2023; Albergo &
Vanden-Eijnden 2023), with the couplings of Tong et al. 2023."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import ArrayLike, Float, Int

from ..._core._checks import as_float_array, check_choice, check_positive
from ..._core._custom_types import KeyArray, RealScalarLike, Scalar
from ..._processes._conversions import convert, rates
from ..._processes._sde import AbstractSDE, as_time
from ._common import (
    Labels,
    RealBatch,
    call,
    check_model,
    check_model_output,
    check_reduction,
    check_time_args,
    drop_labels,
    example_keys,
    prepare_batch,
    prepare_labels,
    reduce,
)
from ._couplings import COUPLINGS, couple
from ._dsm import draw_times
from ._weighting import AbstractWeighting, TimeSampling, UniformTimes, resolve_times


def path_rates(
    sde: AbstractSDE, t: RealScalarLike
) -> tuple[Scalar, Scalar, Scalar, Scalar]:
    r"""$(\alpha, \alpha', \sigma, \sigma')$ at $t$ (`jax.jvp` of the SDE's closed
    forms, finite also at $t = T$ of an interpolant, where $f = \alpha'/\alpha$ is
    not)."""
    a, s, da, ds = rates(sde, as_time(t))
    return a, da, s, ds


def velocity_of(model: Callable, sde: AbstractSDE, t, x, label):
    r"""The velocity $\hat v(t, x)$ of a model: a parametrisation (any model with a
    `velocity(t, x)` method) is asked for it, so a velocity model is regressed on its
    own output; any other callable is a score $s$, converted by
    $\hat v = \alpha' D + \sigma'\hat\varepsilon$ with $D = (x + \sigma^2 s)/\alpha$,
    $\hat\varepsilon = -\sigma s$ (`sdegen._processes._conversions`)."""
    vel = getattr(model, "velocity", None)
    if callable(vel):
        return vel(t, x) if label is None else vel(t, x, label=label)
    return convert(sde, as_time(t), x, call(model, t, x, label), "score", "velocity")


def _as_velocity(model, sde, t, x, label=None):
    return velocity_of(model, sde, t, x, label)


class CFMWeighting(AbstractWeighting):
    r"""The DSM weighting equal to flow matching: $\lambda(t) = g(t)^4/4 =
    \sigma^2(\sigma\alpha'/\alpha - \sigma')^2$.

    For $x_t = \alpha x_0 + \sigma\varepsilon$ the velocity of a score $s$ is
    $v = f x - \tfrac12 g^2 s$ (the probability-flow drift; with $D = (x +
    \sigma^2 s)/\alpha$ and $\hat\varepsilon = -\sigma s$ it is $\alpha' D +
    \sigma'\hat\varepsilon$), affine in $s$ with slope
    $-\tfrac12 g^2 = \sigma(\sigma\alpha'/\alpha - \sigma')$, and the CFM target
    $\alpha' x_0 + \sigma'\varepsilon$ is the same map applied to the conditional
    score $-\varepsilon/\sigma$. Hence

    $$\lVert\hat v - (\alpha' x_0 + \sigma'\varepsilon)\rVert^2 =
    \frac{g^4}{4}\,\big\lVert s + \varepsilon/\sigma\big\rVert^2,$$

    and `dsm_loss(..., weighting="cfm")` is [`sdegen.cfm_loss`][] of the same score
    model with the same key (tested to round-off). On
    [`sdegen.RectifiedFlow`][], $\lambda/\sigma^2 = 1/(T^2(1 - t/T)^2)$ on
    $\lVert\hat\varepsilon - \varepsilon\rVert^2$: flow matching weights the noisy
    end far more than the $\varepsilon$-loss (by $1/\alpha^2$).
    """

    def __call__(self, sde, t):
        return sde._sigma(as_time(t)) ** 2 * self.dsm_factor(sde, t)

    def dsm_factor(self, sde, t):
        a, da, s, ds = path_rates(sde, t)
        return (s * da / a - ds) ** 2


def _single(model, sde, x0, z, xi, t, w, label, reduction, sigma_min):
    a, da, s, ds = path_rates(sde, t)
    xt = a * x0 + s * z
    target = da * x0 + ds * z
    if xi is not None:  # SB-CFM: a Brownian bridge of noise sigma_min around the path
        gam, dgam = jax.jvp(lambda u: sigma_min * jnp.sqrt(sde._alpha(u) * sde._sigma(u)),
                            (t,), (jnp.ones_like(t),))  # fmt: skip
        xt = xt + gam * xi
        target = target + dgam * xi
    v = velocity_of(model, sde, t, xt, label)
    return w * reduce((v - target) ** 2, reduction)


def _setup(sde, eps, t, times, reduction, coupling, sigma_min, dtype):
    check_time_args(sde, eps, t)
    check_reduction(reduction)
    check_choice("coupling", coupling, COUPLINGS)
    check_positive("sigma_min", sigma_min)
    tm = resolve_times(times, False)
    if t is not None and not isinstance(tm, UniformTimes):
        raise ValueError("A fixed `t` replaces the random time; it cannot be combined "
                         "with another `times`.")  # fmt: skip
    return tm.prepare(sde, eps, dtype)


def single_cfm_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    times: TimeSampling = "uniform",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Conditional flow matching for one clean example $x_0$ with independent noise:

    $$\ell = w\,\big\lVert \hat v(t, x_t) - (\alpha'(t) x_0 + \sigma'(t)\varepsilon)
    \big\rVert^2,\qquad x_t = \alpha(t) x_0 + \sigma(t)\varepsilon,$$

    the same draws $(t, \varepsilon)$ from `key` as [`sdegen.single_dsm_loss`][];
    arguments as there. See [`sdegen.cfm_loss`][] for the batch form and the
    couplings.
    """
    check_model(model)
    x0 = as_float_array(x0, "x0")
    tm = _setup(sde, eps, t, times, reduction, "independent", 1.0, x0.dtype)
    kt, kz = jr.split(key)
    ts, ws = draw_times(sde, kt[None], tm, eps, t, False, x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    return _single(model, sde, x0, z, None, ts[0], ws[0], label, reduction, 1.0)


def cfm_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    coupling: str = "independent",
    sigma_min: RealScalarLike = 1.0,
    times: TimeSampling = "uniform",
    stratified: bool = False,
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Conditional flow matching on a batch (Lipman et al. 2023, "Flow Matching for
    Generative Modeling"; Liu et al. 2023, rectified flow; Tong et al. 2023 for the
    couplings): the batch mean of

    $$\ell_b = w_b\,\big\lVert \hat v(t_b, x^{(b)}_{t_b}) - \big(\alpha'(t_b)
    x_0^{(b)} + \sigma'(t_b)\varepsilon_b\big)\big\rVert^2,\qquad
    x_t^{(b)} = \alpha(t_b) x_0^{(b)} + \sigma(t_b)\varepsilon_b,$$

    for any [`sdegen.AbstractSDE`][] of the family ($\alpha'$, $\sigma'$ by
    `jax.jvp` of its closed forms). The minimiser is the velocity $v(t, x) =
    \mathbb{E}[\alpha' x_0 + \sigma'\varepsilon \mid x_t = x]$, the drift of the
    probability-flow ODE. `model` may be of any parametrisation: a model with a
    `velocity(t, x)` method (a velocity parametrisation) is regressed directly, any
    other score model through $\hat v = \alpha' D + \sigma'\hat\varepsilon$.

    **As a DSM weighting.** $\hat v - v_{\text{target}} = -\tfrac12 g^2\,(s +
    \varepsilon/\sigma)$, so with independent pairs this is
    [`sdegen.dsm_loss`][] with $\lambda(t) = g(t)^4/4$ ([`sdegen.CFMWeighting`][],
    `weighting="cfm"`); the same key gives the same value.

    **Couplings** ([`sdegen.COUPLINGS`][]): `"independent"` (default, the batch as
    drawn); `"ot"`, each example's noise is chosen by the exact optimal assignment
    between the batch and the prior samples $\sigma(T)\varepsilon$ (OT-CFM);
    `"sb"`, $B$ pairs drawn from the entropic plan with $\varepsilon_{\text{reg}}
    = 2\sigma_{\min}^2$ and a Brownian bridge $x_t \mathrel{+}= \gamma(t)\xi$,
    $\gamma = \sigma_{\min}\sqrt{\alpha\sigma}$ ($\sigma_{\min}\sqrt{\tau(1-\tau)}$
    on the straight path, $\tau = t/T$: SB-CFM), target $\mathrel{+}=
    \gamma'(t)\xi$. Both run inside the compiled step. With `"ot"` or `"sb"`
    the learned velocity transports the same endpoints along other (straighter)
    paths, so it is no longer the velocity of the SDE's marginals in between:
    sample such a model with the probability-flow ODE.

    **Arguments:**

    - `model`, `sde`, `batch`, `key`, `times`, `stratified`, `eps`, `t`, `labels`,
      `label_dropout`, `null_label`, `reduction`: as in [`sdegen.dsm_loss`][]
      (`times` any of [`sdegen.TIME_SAMPLINGS`][], e.g. `"logit_normal"`).
    - `coupling`: `"independent"`, `"ot"` or `"sb"`.
    - `sigma_min`: $\sigma_{\min} > 0$ of `"sb"` (default 1.0, torchcfm's).

    **Returns:** the scalar mean loss.

    **Raises:** `ValueError` for an unknown coupling or time sampling, and
    everything [`sdegen.dsm_loss`][] raises for its arguments.
    """
    check_model(model)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    tm = _setup(sde, eps, t, times, reduction, coupling, sigma_min, batch.dtype)
    half = jnp.asarray(0.5 * sde.T, batch.dtype)
    vmodel = functools.partial(_as_velocity, model, sde)
    check_model_output(vmodel, half, batch, labels)
    n = batch.shape[0]
    keys, drop_keys = example_keys(key, n)
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    kts, kzs = jnp.moveaxis(jax.vmap(jr.split)(keys), 1, 0)
    ts, ws = draw_times(sde, kts, tm, eps, t, stratified, batch.dtype)
    zs = jax.vmap(lambda k: jr.normal(k, batch.shape[1:], batch.dtype))(kzs)
    xis = None
    if coupling != "independent":
        y = sde._sigma(jnp.asarray(sde.T, batch.dtype)) * zs
        i, j = couple(coupling, batch, y, jr.fold_in(key, 3), sigma_min)
        batch, zs = batch[i], zs[j]
        labels = None if labels is None else labels[i]
        if coupling == "sb":
            xis = jax.vmap(lambda k: jr.normal(jr.fold_in(k, 5), batch.shape[1:],
                                               batch.dtype))(kzs)  # fmt: skip

    def one(x, z, xi, t_, w_, lab):
        return _single(model, sde, x, z, xi, t_, w_, lab, reduction, sigma_min)

    return jnp.mean(jax.vmap(one)(batch, zs, xis, ts, ws, labels))

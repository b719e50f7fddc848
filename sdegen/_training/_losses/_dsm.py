r"""Denoising score matching in continuous time (Vincent 2011; Song et al. 2021, eq. 7)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import ArrayLike, Float, Int

from ..._core._checks import as_float_array
from ..._core._custom_types import KeyArray, RealScalarLike, Scalar
from ..._processes._sde import AbstractSDE
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
from ._weighting import (
    AbstractTimeSampling,
    AbstractWeighting,
    TimeSampling,
    UniformTimes,
    Weighting,
    resolve_times,
    resolve_weighting,
)


def _setup(sde, eps, t, weighting, times, importance_sampling, reduction, dtype):
    eps, t = check_time_args(sde, eps, t)
    check_reduction(reduction)
    weighting = resolve_weighting(weighting)
    times = resolve_times(times, importance_sampling)
    if t is not None and (importance_sampling or not isinstance(times, UniformTimes)):
        raise ValueError(
            "A fixed `t` replaces the random time; it cannot be combined with "
            "`importance_sampling=True` or another `times`."
        )
    return weighting, times.prepare(sde, eps, dtype), eps, t


def _single(model, sde, x0, t, w, kz, label, weighting: AbstractWeighting, reduction):
    z = jr.normal(kz, x0.shape, x0.dtype)
    sigma = sde._sigma(t)
    s = call(model, t, sde._alpha(t) * x0 + sigma * z, label)
    # lambda ||s + z/sigma||^2 = (lambda / sigma^2) ||sigma s + z||^2
    return w * weighting.dsm_factor(sde, t) * reduce((sigma * s + z) ** 2, reduction)


def draw_times(sde, kts, times: AbstractTimeSampling, eps, t_fixed, stratified, dtype):
    """The times `t_b` and factors `w_b` of a batch, one key `kts[b]` per example."""
    n = kts.shape[0]
    if t_fixed is not None:
        return jnp.full((n,), t_fixed, dtype), jnp.ones((n,), dtype)
    u = jax.vmap(lambda k: jr.uniform(k, (), dtype))(kts)
    if stratified:
        # stratum perm[b] for example b: a random pairing, so that the loss of any
        # fixed batch stays unbiased
        perm = jr.permutation(jr.fold_in(kts[0], 1), n)
        u = (perm.astype(dtype) + u) / n
    return jax.vmap(lambda v: times.sample(sde, v, eps))(u)


def single_dsm_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    times: TimeSampling = "uniform",
    eps: RealScalarLike = 1e-5,
    importance_sampling: bool = False,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Denoising score matching for one clean example $x_0$ (Vincent 2011; the
    continuous-time objective of Song et al. 2021, eq. 7):

    $$\ell = w\,\lambda(t)\,\big\lVert s(t, x_t) + z/\sigma(t)\big\rVert^2,\qquad
    x_t = \alpha(t) x_0 + \sigma(t) z,\ z \sim \mathcal{N}(0, I),\ t \sim p(t),$$

    computed as $w\,\frac{\lambda(t)}{\sigma(t)^2}\lVert\sigma s + z\rVert^2$ and
    **summed over all entries** of $x_0$ (`reduction="sum"`, the convention of
    score_sde) or averaged over them (`reduction="mean"`, the convention of the
    Equinox and diffusers examples: the sum divided by the number of entries $D$).
    Since $-z/\sigma = \nabla_x\log p_{0t}(x_t\mid x_0)$, $\mathbb{E}\,\ell =
    \mathbb{E}_t\,w\lambda(t)\,\mathbb{E}\lVert s(t, x_t) - \nabla\log p_t(x_t)
    \rVert^2 + C$, minimised by the true score.

    Weightings ([`sdegen.WEIGHTINGS`][]): `"sigma2"`, $\lambda = \sigma^2$ (Song et
    al.); `"likelihood"`, $\lambda = g^2$ (Song, Durkan, Murray & Ermon 2021);
    `"edm"`, $\lambda = \sigma^2(\tilde\sigma^2 + \sigma_d^2)/\sigma_d^2$ with
    $\sigma_d = 0.5$ (Karras et al. 2022; [`sdegen.EDMWeighting`][] for another
    $\sigma_d$); or any [`sdegen.AbstractWeighting`][] or callable $\lambda(t)$.

    Times ([`sdegen.TIME_SAMPLINGS`][]): `"uniform"`, $t \sim \mathcal{U}(\varepsilon,
    T)$, $w = 1$; `"importance"` (same as `importance_sampling=True`), $t \sim q
    \propto g^2/\sigma^2$ with $w = 1/((T - \varepsilon)q(t))$, the same objective with
    less variance for the likelihood weighting; `"lognormal"`, EDM's $\ln\tilde\sigma
    \sim \mathcal{N}(-1.2, 1.2^2)$ ([`sdegen.LogNormalTimes`][]), $w = 1$.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$ and $z$ (split into two).
    - `weighting`: a weighting name or object, or a callable $\lambda(t)$.
    - `times`: a time-sampling name or [`sdegen.AbstractTimeSampling`][].
    - `eps`: smallest time $\varepsilon \in (0, T)$, default `1e-5`, deliberately
      below the samplers' default end time `1e-3`: the model must be trained on every
      time it is used at, and [`sdegen.log_likelihood`][] integrates down to `1e-5`
      (both are score_sde's defaults; the samplers stop earlier, where the score,
      of size $1/\sigma(t)$, is not yet stiff for a few fixed steps).
    - `importance_sampling`: the same as `times="importance"`.
    - `t`: a fixed time in $(0, T]$ instead of a random one (diagnostics).
    - `label`: optional class label passed to `model(t, x, label=label)`.
    - `reduction`: `"sum"` (default) or `"mean"` over the entries of the example.

    **Returns:** the scalar loss.
    """
    check_model(model)
    x0 = as_float_array(x0, "x0")
    w, tm, eps, t = _setup(sde, eps, t, weighting, times, importance_sampling, reduction,
                   x0.dtype)  # fmt: skip
    kt, kz = jr.split(key)
    ts, ws = draw_times(sde, kt[None], tm, eps, t, False, x0.dtype)
    return _single(model, sde, x0, ts[0], ws[0], kz, label, w, reduction)


def dsm_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    times: TimeSampling = "uniform",
    stratified: bool = False,
    eps: RealScalarLike = 1e-5,
    importance_sampling: bool = False,
    t: RealScalarLike | None = None,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Continuous-time denoising score matching (Song et al. 2021, eq. 7) on a batch:
    the **batch mean** of [`sdegen.single_dsm_loss`][],

    $$\mathcal{L} = \frac1B\sum_{b=1}^B w_b\,\lambda(t_b)\,\big\lVert s(t_b, x^{(b)}_{t_b})
    + z_b/\sigma(t_b)\big\rVert^2,$$

    one independent $(t_b, z_b)$ per example, each example's norm summed over its
    entries (`reduction="sum"`, default) or averaged over them (`"mean"`).
    Example $b$ uses the key `jax.random.split(key, B)[b]`, so its loss is that of
    `single_dsm_loss` with that key (unless `stratified=True`).

    With `stratified=True` the uniform variates behind the times are spread evenly
    over the batch, $u_b = (\pi_b + v_b)/B$ with $v_b \sim \mathcal{U}(0, 1)$ and a
    random permutation $\pi$ (the "evenly spread" times of the Equinox score-based
    diffusion example, there without $\pi$; for uniform times $t_b = \varepsilon +
    (T - \varepsilon)(\pi_b + v_b)/B$): every $t_b$ still has the marginal law $p(t)$,
    so the loss is unbiased for any batch, with less variance from $t$.

    With `labels` and `label_dropout=p`, each label is replaced by `null_label` with
    probability $p$ (an independent Bernoulli per example), training the
    unconditional score alongside the conditional one for classifier-free guidance
    (Ho & Salimans 2022, Algorithm 1).

    **Arguments:**

    - `model`: a score function `model(t, x)` of one example.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `batch`: clean data of shape `(batch, *data)` (finite; checked when concrete).
    - `key`: PRNG key, split into one key per example.
    - `weighting`, `times`, `eps`, `importance_sampling`, `t`, `reduction`: as in
      [`sdegen.single_dsm_loss`][].
    - `stratified`: spread the times evenly over the batch (see above).
    - `labels`: optional integer labels `(batch,)`, passed as `model(t, x,
      label=...)` for class-conditional models.
    - `label_dropout`: probability $p \in [0, 1]$ of replacing a label by
      `null_label`.
    - `null_label`: the "no class" label (for [`sdegen.nn.MLP`][] and
      [`sdegen.nn.UNet`][]: their `num_classes`); needed when `label_dropout > 0`.

    **Returns:** the scalar mean loss.

    **Raises:** `ValueError` for an unknown weighting or time sampling, a non-SDE
    `sde`, `eps` outside $(0, T)$, a batch that is not `(batch, *data)` or not finite,
    labels of the wrong shape, label dropout without `null_label`, or a model whose
    output does not have the data's shape.
    """
    check_model(model)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    w, tm, eps, t = _setup(sde, eps, t, weighting, times, importance_sampling, reduction,
                   batch.dtype)  # fmt: skip
    check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    n = batch.shape[0]
    keys, drop_keys = example_keys(key, n)
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    kts, kzs = jnp.moveaxis(jax.vmap(jr.split)(keys), 1, 0)
    ts, ws = draw_times(sde, kts, tm, eps, t, stratified, batch.dtype)

    def one(x, t_, w_, kz, lab):
        return _single(model, sde, x, t_, w_, kz, lab, w, reduction)

    return jnp.mean(jax.vmap(one)(batch, ts, ws, kzs, labels))

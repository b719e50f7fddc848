r"""Score-matching losses.

Each loss comes in two forms: `single_*_loss(model, ..., x0, key)` for one clean
example, and `*_loss(model, ..., batch, key)`, which splits `key` into one key per
example, `jax.vmap`s the single-example loss and returns the batch mean (so a given
example's contribution does not depend on the batch size). `model(t, x)` is a score
function of one example: an [`sdegen.nn.AbstractParametrisation`][] or any callable.

- `dsm_loss`: $\lambda(t)\lVert s(t, x_t) + z/\sigma(t)\rVert^2$ (Song et al. 2021,
  eq. 7);
- `ncsn_loss`: $\tfrac12\sigma_i^2\lVert s(\sigma_i, x_0 + \sigma_i z) +
  z/\sigma_i\rVert^2$ (Song & Ermon 2019);
- `ddpm_loss`: $\lVert z - \hat\varepsilon(n, \sqrt{\bar\alpha_n}x_0 +
  \sqrt{1-\bar\alpha_n} z)\rVert^2$ (Ho et al. 2020);
- `ssm_loss`: $\lambda(t)[v^\top J v + \tfrac12 (v^\top s)^2]$ at $x_t$ (Song et al.
  2019, sliced score matching);
- `ism_loss`: $\lambda(t)[\operatorname{tr} J + \tfrac12\lVert s\rVert^2]$ at $x_t$
  (Hyvärinen 2005),

with $x_t = \alpha(t) x_0 + \sigma(t) z$, $z \sim \mathcal{N}(0, I)$,
$t \sim \mathcal{U}(\varepsilon, T)$ and $J = \partial s / \partial x$.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Real

from ._checks import as_float_array, concrete_float
from ._custom_types import KeyArray, RealScalarLike, Scalar
from ._misc import is_concrete
from ._sde import AbstractSDE


WEIGHTINGS = ("sigma2", "likelihood")
"""Names accepted by the `weighting` argument of the continuous-time losses."""

Weighting = str | Callable[[Any], Any]
r"""`"sigma2"`, `"likelihood"` or a callable $\lambda(t)$ (a plain `str` so that an
unknown name reaches the `ValueError` that lists the valid ones)."""
Labels = Int[ArrayLike, " num_labels"] | None
RealBatch = Real[ArrayLike, "batch *data"]

_IS_GRID = 2048


# ----------------------------------------------------------------------------------
# Validation


def _check_sde(sde) -> None:
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"`sde` must be an sdegen.AbstractSDE (e.g. sdegen.VPSDE()), got "
            f"{type(sde).__name__}."
        )


def _check_model(model, name: str = "model") -> None:
    if not callable(model):
        raise ValueError(
            f"`{name}` must be a callable {name}(t, x) -> Array, got "
            f"{type(model).__name__}."
        )


def _check_weighting(weighting) -> None:
    if callable(weighting):
        return
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"`weighting` must be one of {', '.join(repr(w) for w in WEIGHTINGS)} or a "
            f"callable lambda(t), got {weighting!r}."
        )


def _check_eps(sde: AbstractSDE, eps) -> None:
    v = concrete_float("eps", eps)
    if v is not None and not (math.isfinite(v) and 0 < v < sde.T):
        raise ValueError(f"`eps` must satisfy 0 < eps < T = {sde.T}, got {v}.")


def _check_fixed_t(sde: AbstractSDE, t) -> None:
    if t is None:
        return
    v = concrete_float("t", t)
    if v is not None and not (math.isfinite(v) and 0 < v <= sde.T):
        raise ValueError(f"`t` must be in (0, T] = (0, {sde.T}], got {v}.")


def _error_if_not_finite(x: Array, name: str) -> Array:
    """Raise now when `x` is concrete (checked with NumPy, so this also works on
    constants inside a traced function), else through `eqx.error_if` at run time."""
    if is_concrete(x):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"`{name}` contains non-finite values (NaN or inf).")
        return x
    return eqx.error_if(
        x, jnp.any(~jnp.isfinite(x)), f"`{name}` contains non-finite values."
    )


def _prepare_batch(batch) -> Array:
    batch = as_float_array(batch, "batch")
    if batch.ndim < 2:
        raise ValueError(
            "`batch` must have shape (batch, *data) with at least one data axis, got "
            f"shape {batch.shape}; wrap a single example as batch[None]."
        )
    if batch.shape[0] == 0:
        raise ValueError("`batch` must hold at least one example, got an empty batch.")
    return _error_if_not_finite(batch, "batch")


def _prepare_labels(labels, batch) -> Array | None:
    if labels is None:
        return None
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}.")
    if labels.shape != batch.shape[:1]:
        raise ValueError(
            f"`labels` must have shape ({batch.shape[0]},) to match `batch`, got shape "
            f"{labels.shape}."
        )
    return labels


def _call(model, t, x, label):
    if label is None:
        return model(t, x)
    return model(t, x, label=label)


def _check_model_output(model, t, x0, label, name: str = "model") -> None:
    """Trace the model once on one example and check it returns the data's shape."""
    lab = None if label is None else label[0]
    out = jax.eval_shape(lambda tt, xx, ll: _call(model, tt, xx, ll), t, x0[0], lab)
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x0.shape[1:]):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`{name}` must return an array of the data's shape {tuple(x0.shape[1:])} "
            f"for one example (model(t, x) is unbatched; the batch is vmapped), got "
            f"{got}."
        )


def _sq(x: Array) -> Array:
    return jnp.sum(x**2)


# ----------------------------------------------------------------------------------
# Time sampling and weighting


def _weight(sde: AbstractSDE, weighting, t) -> Array:
    if callable(weighting):
        return jnp.asarray(weighting(t))
    if weighting == "sigma2":
        return sde.sigma(t) ** 2
    return sde.diffusion(t) ** 2


class _ImportanceGrid(eqx.Module):
    r"""A piecewise-uniform proposal $q(t)$ on $[\varepsilon, T]$ whose mass on each
    cell of a geometric grid is the trapezoid integral of $g(t)^2/\sigma(t)^2$."""

    knots: Array  # (n + 1,) cell edges
    cdf: Array  # (n + 1,) normalised cumulative mass at the edges

    def sample(self, u: Array) -> tuple[Array, Array]:
        """Inverse-CDF draw from $q$ and its exact density $q(t)$ at the draw."""
        n = self.knots.shape[0] - 1
        i = jnp.clip(jnp.searchsorted(self.cdf, u, side="right") - 1, 0, n - 1)
        mass = self.cdf[i + 1] - self.cdf[i]
        width = self.knots[i + 1] - self.knots[i]
        frac = jnp.clip((u - self.cdf[i]) / mass, 0.0, 1.0)
        t = self.knots[i] + frac * width
        return t, mass / width


def _importance_grid(sde: AbstractSDE, eps, dtype) -> _ImportanceGrid:
    r"""Geometric grid $t_i = \varepsilon (T/\varepsilon)^{i/n}$ (fine where
    $g^2/\sigma^2 \sim 1/t$ blows up for VP-type SDEs) with trapezoid cell masses."""
    eps = jnp.asarray(eps, dtype)
    knots = eps * jnp.exp(
        jnp.linspace(0.0, 1.0, _IS_GRID + 1, dtype=dtype) * jnp.log(sde.T / eps)
    )
    knots = knots.at[-1].set(sde.T)
    dens = jax.vmap(lambda s: sde.diffusion(s) ** 2 / sde.sigma(s) ** 2)(knots)
    cell = 0.5 * (dens[1:] + dens[:-1]) * jnp.diff(knots)
    cdf = jnp.concatenate([jnp.zeros((1,), dtype), jnp.cumsum(cell)])
    cdf = cdf / cdf[-1]
    return _ImportanceGrid(knots, cdf)


def _draw_time(sde, key, eps, dtype, t_fixed, grid):
    """Returns `(t, w)`: the time and the factor that makes the estimator unbiased for
    $t \\sim \\mathcal{U}(\\varepsilon, T)$ (1 unless importance sampling)."""
    if t_fixed is not None:
        return jnp.asarray(t_fixed, dtype), jnp.ones((), dtype)
    u = jr.uniform(key, (), dtype)
    if grid is None:
        return eps + (sde.T - eps) * u, jnp.ones((), dtype)
    t, q = grid.sample(u)
    return t, 1 / ((sde.T - eps) * q)


def _time_setup(sde, eps, t, weighting, importance_sampling, dtype):
    _check_sde(sde)
    _check_weighting(weighting)
    _check_eps(sde, eps)
    _check_fixed_t(sde, t)
    if importance_sampling:
        if t is not None:
            raise ValueError(
                "`importance_sampling=True` samples t; it cannot be combined with a "
                "fixed `t`."
            )
        return _importance_grid(sde, eps, dtype)
    return None


# ----------------------------------------------------------------------------------
# Denoising score matching


def _single_dsm(model, sde, x0, key, label, weighting, eps, t_fixed, grid):
    kt, kz = jr.split(key)
    t, w = _draw_time(sde, kt, eps, x0.dtype, t_fixed, grid)
    z = jr.normal(kz, x0.shape, x0.dtype)
    sigma = sde.sigma(t)
    xt = sde.alpha(t) * x0 + sigma * z
    s = _call(model, t, xt, label)
    # lambda ||s + z/sigma||^2 = (lambda / sigma^2) ||sigma s + z||^2
    return w * _weight(sde, weighting, t) / sigma**2 * _sq(sigma * s + z)


def single_dsm_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    importance_sampling: bool = False,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
) -> Scalar:
    r"""Denoising score matching for one clean example $x_0$ (Vincent 2011; the
    continuous-time objective of Song et al. 2021, eq. 7):

    $$\ell = \lambda(t)\,\big\lVert s(t, x_t) + z/\sigma(t)\big\rVert^2,\qquad
    x_t = \alpha(t) x_0 + \sigma(t) z,\ z \sim \mathcal{N}(0, I),\
    t \sim \mathcal{U}(\varepsilon, T),$$

    summed over all entries of $x_0$. Since $-z/\sigma = \nabla_x\log p_{0t}(x_t\mid
    x_0)$, $\mathbb{E}\,\ell = \mathbb{E}_t\,\lambda(t)\,\mathbb{E}\lVert s(t, x_t) -
    \nabla\log p_t(x_t)\rVert^2 + C$, minimised by the true score.

    Weightings: `"sigma2"`, $\lambda = \sigma(t)^2$ (the default of Song et al.), and
    `"likelihood"`, $\lambda = g(t)^2$, for which the objective bounds the negative
    log-likelihood (Song, Durkan, Murray & Ermon 2021); or any callable
    $\lambda(t)$. With `importance_sampling=True`, $t$ is drawn from a proposal
    $q(t) \propto g(t)^2/\sigma(t)^2$ (piecewise uniform on a fine geometric grid, with
    its inverse CDF computed numerically) and the loss is multiplied by
    $1/((T - \varepsilon) q(t))$, so its expectation is unchanged while the variance of
    the likelihood weighting drops.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$ and $z$.
    - `weighting`: `"sigma2"`, `"likelihood"` or a callable $\lambda(t)$.
    - `eps`: smallest time $\varepsilon \in (0, T)$, default `1e-5`.
    - `importance_sampling`: sample $t$ from $q \propto g^2/\sigma^2$ (unbiased).
    - `t`: a fixed time in $(0, T]$ instead of a random one (diagnostics).
    - `label`: optional class label passed to `model(t, x, label=label)`.

    **Returns:** the scalar loss.
    """
    _check_model(model)
    x0 = as_float_array(x0, "x0")
    grid = _time_setup(sde, eps, t, weighting, importance_sampling, x0.dtype)
    return _single_dsm(model, sde, x0, key, label, weighting, eps, t, grid)


def dsm_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    importance_sampling: bool = False,
    t: RealScalarLike | None = None,
    labels: Labels = None,
) -> Scalar:
    r"""The batch mean of [`sdegen.single_dsm_loss`][]: continuous-time denoising
    score matching (Song et al. 2021, eq. 7),
    $\frac1B\sum_b \lambda(t_b)\lVert s(t_b, x_{t_b}^{(b)}) + z_b/\sigma(t_b)\rVert^2$,
    one independent $(t_b, z_b)$ per example.

    **Arguments:**

    - `model`: a score function `model(t, x)` of one example.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `batch`: clean data of shape `(batch, *data)` (finite).
    - `key`: PRNG key, split into one key per example.
    - `weighting`: `"sigma2"` ($\lambda = \sigma^2$), `"likelihood"`
      ($\lambda = g^2$) or a callable $\lambda(t)$.
    - `eps`: smallest time, $t \sim \mathcal{U}(\varepsilon, T)$; default `1e-5`.
    - `importance_sampling`: draw $t \propto g^2/\sigma^2$ and reweight (unbiased for
      the same objective; meant for `weighting="likelihood"`).
    - `t`: optional fixed time for all examples (diagnostics: the loss at one $t$).
    - `labels`: optional integer labels `(batch,)`, passed as `model(t, x,
      label=...)` for class-conditional models.

    **Returns:** the scalar mean loss.

    **Raises:** `ValueError` for an unknown weighting, a non-SDE `sde`, `eps` outside
    $(0, T)$, a batch that is not `(batch, *data)` or not finite, or a model whose
    output does not have the data's shape.
    """
    _check_model(model)
    batch = _prepare_batch(batch)
    labels = _prepare_labels(labels, batch)
    grid = _time_setup(sde, eps, t, weighting, importance_sampling, batch.dtype)
    _check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    keys = jr.split(key, batch.shape[0])
    per = jax.vmap(
        lambda x, k, lab: _single_dsm(model, sde, x, k, lab, weighting, eps, t, grid)
    )(batch, keys, labels)
    return jnp.mean(per)


# ----------------------------------------------------------------------------------
# NCSN


def geometric_sigmas(
    sigma_max: RealScalarLike, sigma_min: RealScalarLike, num_levels: int
) -> Float[Array, " num_levels"]:
    r"""The decreasing geometric ladder of NCSN (Song & Ermon 2019),
    $\sigma_i = \sigma_{\max}(\sigma_{\min}/\sigma_{\max})^{i/(L-1)}$,
    $i = 0, \dots, L-1$, so $\sigma_0 = \sigma_{\max}$ and
    $\sigma_{L-1} = \sigma_{\min}$.

    **Arguments:**

    - `sigma_max`: the largest noise level.
    - `sigma_min`: the smallest noise level, $0 < \sigma_{\min} < \sigma_{\max}$.
    - `num_levels`: $L \ge 2$.

    **Returns:** an array of shape `(num_levels,)` in JAX's default float dtype.
    """
    smax = concrete_float("sigma_max", sigma_max)
    smin = concrete_float("sigma_min", sigma_min)
    if smin is None or smax is None:
        raise ValueError("`sigma_max` and `sigma_min` must be concrete numbers.")
    if not (math.isfinite(smin) and smin > 0):
        raise ValueError(f"`sigma_min` must be finite and > 0, got {smin}.")
    if not (math.isfinite(smax) and smax > smin):
        raise ValueError(
            f"`sigma_max` must be finite and > `sigma_min` = {smin}, got {smax}."
        )
    if int(num_levels) != num_levels or num_levels < 2:
        raise ValueError(f"`num_levels` must be an int >= 2, got {num_levels!r}.")
    ladder = np.geomspace(smax, smin, int(num_levels))
    return jnp.asarray(ladder, jnp.zeros(()).dtype)


def _check_sigmas(sigmas) -> Array:
    sigmas = as_float_array(sigmas, "sigmas")
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(
            f"`sigmas` must be a non-empty 1-D array of noise levels, got shape "
            f"{sigmas.shape}."
        )
    if is_concrete(sigmas):
        s = np.asarray(sigmas)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("`sigmas` must be finite and > 0.")
        if np.any(np.diff(s) >= 0):
            raise ValueError(
                "`sigmas` must be strictly decreasing (sigma_max first), e.g. "
                "sdegen.geometric_sigmas(sigma_max, sigma_min, num_levels)."
            )
    return sigmas


def _single_ncsn(model, sigmas, x0, key, label):
    ki, kz = jr.split(key)
    i = jr.randint(ki, (), 0, sigmas.shape[0])
    sigma = sigmas[i].astype(x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    s = _call(model, sigma, x0 + sigma * z, label)
    # (1/2) sigma^2 ||s + z/sigma||^2 = (1/2) ||sigma s + z||^2
    return 0.5 * _sq(sigma * s + z)


def single_ncsn_loss(
    model: Callable,
    sigmas: Float[ArrayLike, " levels"],
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    label: Int[ArrayLike, ""] | None = None,
) -> Scalar:
    r"""The NCSN loss for one clean example (Song & Ermon 2019, eqs. 5-6): a level
    $i \sim \mathcal{U}\{0, \dots, L-1\}$, $\tilde x = x_0 + \sigma_i z$, and

    $$\ell = \lambda(\sigma_i)\,\tfrac12\big\lVert s(\sigma_i, \tilde x) +
    z/\sigma_i\big\rVert^2,\qquad \lambda(\sigma) = \sigma^2,$$

    (note the paper's factor $\tfrac12$), whose expectation is the paper's
    $\frac1L\sum_i \lambda(\sigma_i)\,\ell(\theta; \sigma_i)$.

    **Arguments:**

    - `model`: a noise-conditional score `model(sigma, x)`.
    - `sigmas`: the noise levels, positive and strictly decreasing.
    - `x0`: one clean example.
    - `key`: PRNG key for the level and the noise.
    - `label`: optional class label passed to the model.

    **Returns:** the scalar loss.
    """
    _check_model(model)
    sigmas = _check_sigmas(sigmas)
    x0 = as_float_array(x0, "x0")
    return _single_ncsn(model, sigmas, x0, key, label)


def ncsn_loss(
    model: Callable,
    sigmas: Float[ArrayLike, " levels"],
    batch: RealBatch,
    key: KeyArray,
    *,
    labels: Labels = None,
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ncsn_loss`][] (Song & Ermon 2019): denoising
    score matching of a noise-conditional score `model(sigma, x)` over a ladder of
    noise levels, $\frac1B\sum_b \tfrac12\lVert\sigma_{i_b} s(\sigma_{i_b},
    x_b + \sigma_{i_b} z_b) + z_b\rVert^2$ with one uniform level per example.

    **Arguments:**

    - `model`: a noise-conditional score `model(sigma, x)` of one example.
    - `sigmas`: noise levels, positive and strictly decreasing (see
      [`sdegen.geometric_sigmas`][]).
    - `batch`: clean data of shape `(batch, *data)` (finite).
    - `key`: PRNG key, split into one key per example.
    - `labels`: optional integer labels `(batch,)`.

    **Returns:** the scalar mean loss.
    """
    _check_model(model)
    sigmas = _check_sigmas(sigmas)
    batch = _prepare_batch(batch)
    labels = _prepare_labels(labels, batch)
    _check_model_output(model, sigmas[0].astype(batch.dtype), batch, labels)
    keys = jr.split(key, batch.shape[0])
    per = jax.vmap(lambda x, k, lab: _single_ncsn(model, sigmas, x, k, lab))(
        batch, keys, labels
    )
    return jnp.mean(per)


# ----------------------------------------------------------------------------------
# DDPM


def _check_alphas_cumprod(alphas_cumprod) -> Array:
    a = as_float_array(alphas_cumprod, "alphas_cumprod")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(
            f"`alphas_cumprod` must be a non-empty 1-D array, got shape {a.shape}."
        )
    if is_concrete(a):
        v = np.asarray(a)
        if not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(v >= 1):
            raise ValueError(
                "`alphas_cumprod` must hold values in (0, 1) (products of 1 - beta_n)."
            )
    return a


def _single_ddpm(eps_model, alphas_cumprod, x0, key, label):
    kn, kz = jr.split(key)
    n = jr.randint(kn, (), 0, alphas_cumprod.shape[0])
    abar = alphas_cumprod[n].astype(x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    xn = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * z
    return _sq(z - _call(eps_model, n, xn, label))


def single_ddpm_loss(
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    label: Int[ArrayLike, ""] | None = None,
) -> Scalar:
    r"""The simple DDPM loss for one clean example (Ho et al. 2020, eq. 14):
    $n \sim \mathcal{U}\{0, \dots, N-1\}$, $z \sim \mathcal{N}(0, I)$,

    $$\ell = \big\lVert z - \hat\varepsilon\big(n,\ \sqrt{\bar\alpha_n}\,x_0 +
    \sqrt{1 - \bar\alpha_n}\,z\big)\big\rVert^2$$

    summed over all entries.

    **Arguments:**

    - `eps_model`: the noise predictor `eps_model(n, x)`, called with the integer step
      `n` (an int32 scalar array) in `[0, N)`.
    - `alphas_cumprod`: $\bar\alpha_n = \prod_{m \le n}(1 - \beta_m)$, shape `(N,)`,
      values in $(0, 1)$.
    - `x0`: one clean example.
    - `key`: PRNG key for $n$ and $z$.
    - `label`: optional class label passed to the model.

    **Returns:** the scalar loss.
    """
    _check_model(eps_model, "eps_model")
    alphas_cumprod = _check_alphas_cumprod(alphas_cumprod)
    x0 = as_float_array(x0, "x0")
    return _single_ddpm(eps_model, alphas_cumprod, x0, key, label)


def ddpm_loss(
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    batch: RealBatch,
    key: KeyArray,
    *,
    labels: Labels = None,
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ddpm_loss`][], Ho et al. 2020's
    $L_{\text{simple}} = \mathbb{E}_{n, x_0, z}\lVert z - \hat\varepsilon(n,
    \sqrt{\bar\alpha_n}x_0 + \sqrt{1 - \bar\alpha_n}z)\rVert^2$.

    **Arguments:**

    - `eps_model`: `eps_model(n, x)` with integer step `n` in `[0, N)`.
    - `alphas_cumprod`: shape `(N,)`, values in $(0, 1)$.
    - `batch`: clean data of shape `(batch, *data)` (finite).
    - `key`: PRNG key, split into one key per example.
    - `labels`: optional integer labels `(batch,)`.

    **Returns:** the scalar mean loss.
    """
    _check_model(eps_model, "eps_model")
    alphas_cumprod = _check_alphas_cumprod(alphas_cumprod)
    batch = _prepare_batch(batch)
    labels = _prepare_labels(labels, batch)
    _check_model_output(eps_model, jnp.asarray(0), batch, labels, "eps_model")
    keys = jr.split(key, batch.shape[0])
    per = jax.vmap(
        lambda x, k, lab: _single_ddpm(eps_model, alphas_cumprod, x, k, lab)
    )(batch, keys, labels)
    return jnp.mean(per)


# ----------------------------------------------------------------------------------
# Sliced and implicit score matching


_PROJECTIONS = ("rademacher", "gaussian")


def _noised(sde, x0, key, eps, t_fixed):
    kt, kz = jr.split(key)
    t, _ = _draw_time(sde, kt, eps, x0.dtype, t_fixed, None)
    z = jr.normal(kz, x0.shape, x0.dtype)
    return t, sde.alpha(t) * x0 + sde.sigma(t) * z


def _single_ssm(
    model, sde, x0, key, label, num_projections, variance_reduction, projection,
    weighting, eps, t_fixed,
):  # fmt: skip
    kx, kv = jr.split(key)
    t, xt = _noised(sde, x0, kx, eps, t_fixed)
    shape = (num_projections, *x0.shape)
    if projection == "rademacher":
        vs = jr.rademacher(kv, shape, x0.dtype)
    else:
        vs = jr.normal(kv, shape, x0.dtype)
    f = lambda y: _call(model, t, y, label)

    def one(v):
        s, jv = jax.jvp(f, (xt,), (v,))
        quad = 0.5 * _sq(s) if variance_reduction else 0.5 * jnp.sum(v * s) ** 2
        return jnp.sum(v * jv) + quad

    return _weight(sde, weighting, t) * jnp.mean(jax.vmap(one)(vs))


def _check_ssm_args(num_projections, projection):
    if int(num_projections) != num_projections or num_projections < 1:
        raise ValueError(
            f"`num_projections` must be a positive int, got {num_projections!r}."
        )
    if projection not in _PROJECTIONS:
        raise ValueError(
            f"`projection` must be one of {', '.join(repr(p) for p in _PROJECTIONS)}, "
            f"got {projection!r}."
        )


def single_ssm_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    num_projections: int = 1,
    variance_reduction: bool = False,
    projection: str = "rademacher",
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
) -> Scalar:
    r"""Sliced score matching for one example (Song, Garg, Shi & Ermon 2019), at the
    noised data $x_t = \alpha(t)x_0 + \sigma(t)z$, $t \sim \mathcal{U}(\varepsilon, T)$,
    so it applies to time-dependent models: with $J = \partial_x s(t, x_t)$ and $M$
    projections $v_m$ (Rademacher or standard Gaussian),

    $$\ell = \lambda(t)\,\frac1M\sum_m \Big[v_m^\top J v_m +
    \tfrac12\big(v_m^\top s(t, x_t)\big)^2\Big],$$

    or with `variance_reduction=True` (SSM-VR) $\tfrac12\lVert s\rVert^2$ in place of
    $\tfrac12(v^\top s)^2$ (its expectation over $v$). $J v$ comes from one
    `jax.jvp` per projection (no full Jacobian). In expectation
    $\ell = \lambda(t)\,\tfrac12\mathbb{E}\lVert s - \nabla\log p_t\rVert^2 + C$.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$, $z$ and the projections.
    - `num_projections`: $M \ge 1$.
    - `variance_reduction`: use the SSM-VR form.
    - `projection`: `"rademacher"` or `"gaussian"`.
    - `weighting`: `"sigma2"`, `"likelihood"` or a callable $\lambda(t)$.
    - `eps`: smallest time, default `1e-5`.
    - `t`: optional fixed time in $(0, T]$.
    - `label`: optional class label passed to the model.

    **Returns:** the scalar loss.
    """
    _check_model(model)
    _check_ssm_args(num_projections, projection)
    x0 = as_float_array(x0, "x0")
    _time_setup(sde, eps, t, weighting, False, x0.dtype)
    return _single_ssm(
        model, sde, x0, key, label, int(num_projections), variance_reduction,
        projection, weighting, eps, t,
    )  # fmt: skip


def ssm_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    num_projections: int = 1,
    variance_reduction: bool = False,
    projection: str = "rademacher",
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    labels: Labels = None,
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ssm_loss`][]: sliced score matching
    (Song et al. 2019) at noised data, $\frac1B\sum_b \lambda(t_b)\frac1M\sum_m
    [v^\top J v + \tfrac12 (v^\top s)^2]$ (or $\tfrac12\lVert s\rVert^2$ with
    `variance_reduction=True`).

    **Arguments:** as [`sdegen.single_ssm_loss`][], with `batch` of shape
    `(batch, *data)` in place of `x0` and optional `labels` `(batch,)`.

    **Returns:** the scalar mean loss.
    """
    _check_model(model)
    _check_ssm_args(num_projections, projection)
    batch = _prepare_batch(batch)
    labels = _prepare_labels(labels, batch)
    _time_setup(sde, eps, t, weighting, False, batch.dtype)
    _check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    keys = jr.split(key, batch.shape[0])
    m = int(num_projections)
    per = jax.vmap(
        lambda x, k, lab: _single_ssm(
            model, sde, x, k, lab, m, variance_reduction, projection, weighting, eps, t
        )
    )(batch, keys, labels)
    return jnp.mean(per)


def _single_ism(model, sde, x0, key, label, weighting, eps, t_fixed):
    t, xt = _noised(sde, x0, key, eps, t_fixed)
    shape = x0.shape
    flat = lambda y: jnp.ravel(_call(model, t, y.reshape(shape), label))
    y = jnp.ravel(xt)
    jac = jax.jacfwd(flat)(y)
    s = flat(y)
    return _weight(sde, weighting, t) * (jnp.trace(jac) + 0.5 * _sq(s))


def single_ism_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
) -> Scalar:
    r"""Exact implicit score matching for one example (Hyvärinen 2005) at the noised
    data $x_t = \alpha(t)x_0 + \sigma(t)z$, $t \sim \mathcal{U}(\varepsilon, T)$:

    $$\ell = \lambda(t)\Big[\operatorname{tr}\big(\partial_x s(t, x_t)\big) +
    \tfrac12\lVert s(t, x_t)\rVert^2\Big],$$

    with the full Jacobian from `jax.jacfwd` ($D$ forward passes for $D$ entries: for
    low-dimensional data). In expectation
    $\ell = \lambda(t)\,\tfrac12\mathbb{E}\lVert s - \nabla\log p_t\rVert^2 + C$.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$ and $z$.
    - `weighting`: `"sigma2"`, `"likelihood"` or a callable $\lambda(t)$.
    - `eps`: smallest time, default `1e-5`.
    - `t`: optional fixed time in $(0, T]$.
    - `label`: optional class label passed to the model.

    **Returns:** the scalar loss.
    """
    _check_model(model)
    x0 = as_float_array(x0, "x0")
    _time_setup(sde, eps, t, weighting, False, x0.dtype)
    return _single_ism(model, sde, x0, key, label, weighting, eps, t)


def ism_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    labels: Labels = None,
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ism_loss`][]: exact implicit score matching
    (Hyvärinen 2005), $\frac1B\sum_b\lambda(t_b)[\operatorname{tr} J +
    \tfrac12\lVert s\rVert^2]$ at noised data, with the Jacobian trace from
    `jax.jacfwd` (cost grows with the data dimension: use it for low dimension).

    **Arguments:** as [`sdegen.single_ism_loss`][], with `batch` of shape
    `(batch, *data)` in place of `x0` and optional `labels` `(batch,)`.

    **Returns:** the scalar mean loss.
    """
    _check_model(model)
    batch = _prepare_batch(batch)
    labels = _prepare_labels(labels, batch)
    _time_setup(sde, eps, t, weighting, False, batch.dtype)
    _check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    keys = jr.split(key, batch.shape[0])
    per = jax.vmap(
        lambda x, k, lab: _single_ism(model, sde, x, k, lab, weighting, eps, t)
    )(batch, keys, labels)
    return jnp.mean(per)

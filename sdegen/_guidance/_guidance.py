r"""Score transforms for conditional sampling without retraining.

By Bayes' rule the score of the conditional $p_t(x \mid y)$ splits into the
unconditional score and the gradient of a likelihood,

$$\nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x)$$

(Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential
Equations", §5). Each function here takes a score `score(t, x)` and returns another
score, an `equinox.Module` called as `score(t, x)`, so the result plugs into every
sampler ([`sdegen.sample_sde`][], [`sdegen.sample_ode`][], `sdegen.pc_sample`, ...).
Transforms compose with [`sdegen.chain`][], in the manner of `optax.chain`.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import check_finite_scalar, check_positive, check_score
from .._core._custom_types import Data, RealScalarLike
from .._processes._sde import AbstractSDE, check_sde


def _check_callable(name: str, f: Any, what: str) -> None:
    if not callable(f):
        raise ValueError(f"`{name}` must be a callable {what}, got {type(f).__name__}.")


def _check_label(label: Any, name: str = "label") -> Any:
    if label is None:
        return None
    arr = jnp.asarray(label)
    if arr.shape != () or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(
            f"`{name}` must be a scalar integer class index, got {label!r} "
            f"(shape {arr.shape}, dtype {arr.dtype})."
        )
    return arr


class ClassifierGuidedScore(eqx.Module):
    r"""The score $s(t, x) + \gamma\,\nabla_x \log p_t(y \mid x)$ of classifier
    guidance (Song et al. 2021, §5 and Appendix I.1; Dhariwal & Nichol 2021, "Diffusion
    Models Beat GANs on Image Synthesis", with guidance scale $\gamma$).

    With $\gamma = 1$ and the exact time-dependent classifier this is exactly the
    conditional score $\nabla_x \log p_t(x \mid y)$; $\gamma > 1$ sharpens the
    conditional, sampling approximately from $p_t(x)\,p_t(y \mid x)^\gamma$.

    Build it with [`sdegen.classifier_guidance`][].
    """

    score: Callable
    log_prob_fn: Callable
    label: Any
    scale: RealScalarLike

    def _log_likelihood(self, t, x):
        out = jnp.asarray(self.log_prob_fn(t, x))
        if self.label is None:
            if out.shape != ():
                raise ValueError(
                    "`log_prob_fn` must return a scalar log-likelihood when `label` is "
                    f"None, got shape {out.shape}."
                )
            return out
        if out.ndim != 1:
            raise ValueError(
                "`log_prob_fn(t, x)` must return a vector of class logits or log-"
                f"probabilities of shape (num_classes,), got shape {out.shape}."
            )
        return jax.nn.log_softmax(out)[self.label]

    def __call__(self, t: RealScalarLike, x: Data) -> Data:
        x = jnp.asarray(x)
        s = jnp.asarray(self.score(t, x))
        g = jax.grad(self._log_likelihood, argnums=1)(t, x)
        return (s + self.scale * g).astype(jnp.result_type(s, x))


def classifier_guidance(
    score: Any,
    log_prob_fn: Any,
    label: Any = None,
    scale: RealScalarLike = 1.0,
) -> ClassifierGuidedScore:
    r"""Guide a score with a time-dependent classifier:
    $\tilde s(t, x) = s(t, x) + \gamma\,\nabla_x \log p_t(y \mid x)$.

    The gradient is taken by `jax.grad` through `log_prob_fn`; the class logits are
    normalised with a log-softmax, so `log_prob_fn` may return unnormalised logits
    (e.g. an [`sdegen.TimeClassifier`][]) or log-probabilities.

    **Arguments:**

    - `score`: the unconditional score `score(t, x)`.
    - `log_prob_fn`: `log_prob_fn(t, x)` for one example; with a `label`, it returns
      the logits $\log p_t(\cdot \mid x) + c$ of shape `(num_classes,)`; with
      `label=None`, it returns the scalar $\log p_t(y \mid x)$ of a fixed observation
      (any differentiable log-likelihood).
    - `label`: the class index $y$ (a Python or JAX integer; vmap over a label array
      for one class per sample), or `None`.
    - `scale`: the guidance scale $\gamma$ (1 is exact Bayes; 0 turns guidance off).

    **Returns:** a [`sdegen.ClassifierGuidedScore`][], itself a score `(t, x)`.

    **Raises:** `ValueError` when `score` or `log_prob_fn` is not callable, `label` is
    not a scalar integer, or `scale` is not a finite number.

    !!! example

        ```python
        guided = sg.classifier_guidance(score, classifier, label=3, scale=2.0)
        x = sg.sample_sde(key, sde, guided, (1, 28, 28))
        ```
    """
    _check_callable("score", score, "score(t, x) -> Array")
    _check_callable("log_prob_fn", log_prob_fn, "log_prob_fn(t, x) -> logits")
    label = _check_label(label)
    scale = check_finite_scalar("scale", scale)
    return ClassifierGuidedScore(score, log_prob_fn, label, scale)


class ClassifierFreeGuidedScore(eqx.Module):
    r"""The classifier-free guided score (Ho & Salimans 2021, "Classifier-Free Diffusion
    Guidance"):

    $$\tilde s(t, x) = (1 + w)\,s(t, x, y) - w\,s(t, x, \varnothing),$$

    from one score model trained with label dropout, whose unconditional branch is
    called with `label=None`. Equivalently $\tilde s = s(t, x) + (1 + w)\,\nabla_x
    \log p_t(y \mid x)$ for the implicit classifier $p_t(y \mid x) \propto
    p_t(x \mid y) / p_t(x)$: $w = 0$ is plain conditional sampling, $w > 0$ sharpens.

    Build it with [`sdegen.classifier_free_guidance`][].
    """

    cond_score: Callable
    label: Any
    w: RealScalarLike

    def __call__(self, t: RealScalarLike, x: Data) -> Data:
        x = jnp.asarray(x)
        s_c = jnp.asarray(self.cond_score(t, x, self.label))
        s_u = jnp.asarray(self.cond_score(t, x, None))
        out = (1 + self.w) * s_c - self.w * s_u
        return out.astype(jnp.result_type(s_c, x))


def classifier_free_guidance(
    cond_score: Any, label: Any, w: RealScalarLike = 0.0
) -> ClassifierFreeGuidedScore:
    r"""Mix a label-conditional score with its unconditional branch,
    $\tilde s(t, x) = (1 + w)\,s(t, x, y) - w\,s(t, x, \varnothing)$ (Ho & Salimans
    2021).

    **Arguments:**

    - `cond_score`: `cond_score(t, x, label)` for one example; `label=None` must give
      the unconditional score (for a network trained with label dropout, map `None`
      to the null token).
    - `label`: the class index $y$ (an integer; vmap over a label array for one class
      per sample).
    - `w`: the guidance weight $w \ge 0$ ($w = 0$: conditional sampling).

    **Returns:** a [`sdegen.ClassifierFreeGuidedScore`][], a score `(t, x)`.

    **Raises:** `ValueError` when `cond_score` is not callable, `label` is not a
    scalar integer, or `w` is negative or not finite.
    """
    _check_callable("cond_score", cond_score, "cond_score(t, x, label) -> Array")
    if label is None:
        raise ValueError(
            "`label` must be a class index; label=None is the unconditional branch, so "
            "call `cond_score(t, x, None)` directly for unconditional sampling."
        )
    label = _check_label(label)
    w = check_positive("w", w, allow_zero=True)
    return ClassifierFreeGuidedScore(cond_score, label, w)


class Chain(eqx.Module):
    r"""Several score transforms applied in order: `Chain(f, g)(score) ==
    g(f(score))`. Build it with [`sdegen.chain`][]."""

    transforms: tuple[Callable, ...]

    def __call__(self, score: Callable) -> Callable:
        for transform in self.transforms:
            score = transform(score)
        return score


def chain(*transforms: Any) -> Chain:
    r"""Compose score transforms, each a callable `score -> score`, applied left to
    right (as `optax.chain` composes gradient transformations).

    Since the guidance terms add, chaining several classifier guidances multiplies
    the likelihoods: $\tilde s = s + \sum_i \gamma_i \nabla_x \log p_t(y_i \mid x)$.

    **Arguments:**

    - `*transforms`: callables taking a score and returning a score, e.g.
      `functools.partial(sg.classifier_guidance, log_prob_fn=clf, label=3)`.

    **Returns:** a [`sdegen.Chain`][]; call it on a score to get the final score.

    **Raises:** `ValueError` when a transform is not callable.

    !!! example

        ```python
        guide = sg.chain(
            functools.partial(sg.classifier_guidance, log_prob_fn=digit_clf, label=3),
            functools.partial(sg.classifier_guidance, log_prob_fn=tint_clf, label=0),
        )
        x = sg.sample_sde(key, sde, guide(score), (3, 28, 28))
        ```
    """
    for i, transform in enumerate(transforms):
        _check_callable(f"transforms[{i}]", transform, "score -> score transform")
    return Chain(tuple(transforms))


Chain.__init__.__doc__ = """**Arguments:**

- `transforms`: a tuple of callables `score -> score`.
"""


# ---------------------------------------------------------------- DPS


class DPSScore(eqx.Module):
    r"""The diffusion-posterior-sampling score (Chung et al. 2023)

    $$\tilde s(t, x) = s(t, x) - \gamma\,\nabla_x
    \frac{\lVert y - A\hat x_0(x)\rVert^2}{2 s^2},\qquad
    \hat x_0(x) = \frac{x + \sigma(t)^2 s(t, x)}{\alpha(t)},$$

    computed with one score evaluation and one vector–Jacobian product:
    $\nabla_x = \alpha(t)^{-1}(I + \sigma(t)^2 J_s^\top) A^\top (y - A\hat x_0)/s^2$.
    Build it with [`sdegen.dps_guidance`][].
    """

    score: Callable
    sde: AbstractSDE
    op: eqx.Module
    y: Array
    noise_std: RealScalarLike
    scale: RealScalarLike

    def __call__(self, t: RealScalarLike, x: Data) -> Data:
        x = jnp.asarray(x)
        s, vjp = jax.vjp(lambda x_: jnp.asarray(self.score(t, x_)).astype(x.dtype), x)
        a, sig = self.sde._alpha(t), self.sde._sigma(t)
        x0 = (x + sig**2 * s) / a
        v = self.op.transpose(self.y - self.op(x0)) / self.noise_std**2
        (jv,) = vjp(v.astype(x.dtype))
        grad = (v + sig**2 * jv) / a
        return (s + self.scale * grad).astype(x.dtype)


def dps_guidance(
    score: Any,
    sde: AbstractSDE,
    y: Float[ArrayLike, "*obs"],
    A: Any,
    noise_std: RealScalarLike,
    *,
    scale: RealScalarLike = 1.0,
    shape: tuple[int, ...] | None = None,
) -> DPSScore:
    r"""Turn an unconditional score into the approximate posterior score of diffusion
    posterior sampling for $y = A x_0 + n$, $n \sim \mathcal{N}(0, s^2 I)$ (Chung et
    al. 2023): $\nabla\log p_t(y \mid x_t) \approx \nabla_{x_t} \log
    \mathcal{N}(y;\ A\hat x_0(x_t),\ s^2 I)$ through Tweedie's estimate $\hat x_0$.

    The approximation replaces $p(x_0 \mid x_t)$ by a point mass at its mean; it is
    exact as $t \to 0$ and biased at large $t$ (too confident when $s$ is small,
    which `scale` < 1 tempers).

    **Arguments:**

    - `score`: the unconditional score `score(t, x)`.
    - `sde`: the forward SDE (for $\alpha(t)$, $\sigma(t)$).
    - `y`: the observation: shape `(m,)` for a matrix `A`, else `A`'s output shape.
    - `A`: an `(m, d)` matrix acting on the flattened example, or a linear function
      of one example.
    - `noise_std`: $s > 0$.
    - `scale`: the guidance scale $\gamma$.
    - `shape`: the shape of one example (required for a function `A`; `(d,)` by
      default for a matrix).

    **Returns:** a [`sdegen.DPSScore`][], a score `(t, x)`.

    **Raises:** `ValueError` for inconsistent shapes of `A`, `y` and `shape`, or
    `noise_std` $\le 0$.
    """
    from .._engine._projections import as_operator, check_obs

    check_sde(sde)
    check_score(score)
    noise_std = check_positive("noise_std", noise_std)
    y = check_obs(y, "y")
    op, _ = as_operator(A, y, shape, check_rank=False)
    return DPSScore(score, sde, op, y, noise_std, scale)

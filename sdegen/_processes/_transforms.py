r"""Transforms of a model between predictions and paths: [`sdegen.velocity`][] (the
probability-flow ODE's drift of any model, as a velocity field) and
[`sdegen.change_sde`][] (the score of the same model on another path, by matching
the signal-to-noise ratio).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp

from .._core._checks import check_choice, check_score
from .._core._custom_types import Data, RealScalarLike
from ._sde import AbstractSDE, as_time, check_sde
from ._terms import ScoreDrift


def _args(args: tuple, kwargs: dict) -> Any:
    if args and kwargs:
        raise ValueError("Pass the model's extra arguments either by position or by name.")
    if kwargs:
        return kwargs
    return args[0] if len(args) == 1 else (args or None)


class VelocityField(eqx.Module):
    r"""$v(t, x) = \alpha'(t) D + \sigma'(t)\hat\varepsilon$ of a model on an SDE,
    called as `v(t, x)` (extra arguments go to the model, e.g. `label=3`). Built by
    [`sdegen.velocity`][]."""

    sde: AbstractSDE
    score: Callable

    def __call__(self, t: RealScalarLike, x: Data, *args: Any, **kwargs: Any) -> Data:
        t = self.sde._t(t)
        x = jnp.asarray(x)
        t = t.astype(jnp.result_type(x, t))
        return ScoreDrift(self.sde, self.score, 0.5).velocity(t, x, _args(args, kwargs))


def velocity(sde: AbstractSDE, score: Callable) -> VelocityField:
    r"""The velocity field $v(t, x) = \mathbb{E}[\alpha'(t) x_0 + \sigma'(t)\varepsilon
    \mid x_t = x]$ of a model: the probability-flow ODE's drift
    $\mathrm{d}x/\mathrm{d}t$, the target of flow matching. With
    $D = (x + \sigma^2 s)/\alpha$ and $\hat\varepsilon = -\sigma s$,

    $$v = \alpha' D + \sigma'\hat\varepsilon = f x - \tfrac12 g^2 s.$$

    A [`sdegen.nn.VelocityParam`][] of the same SDE returns its own prediction; for
    any other score, where $\alpha(t) = 0$ ($t = T$ of an interpolant) $D$ is the exact
    limit $(2\sigma\sigma' s + \sigma^2\partial_t s)/\alpha'$ (see
    [`sdegen.ScoreDrift`][]).

    **Arguments:**

    - `sde`: an [`sdegen.AbstractSDE`][].
    - `score`: a score function `score(t, x)` or any parametrised model.

    **Returns:** a callable `v(t, x)` for one example.
    """
    check_sde(sde)
    check_score(score)
    return VelocityField(sde, score)


class ChangedScore(eqx.Module):
    r"""The score of a model trained on `from_sde`, on the path `to_sde` (built by
    [`sdegen.change_sde`][])."""

    score: Callable
    from_sde: AbstractSDE
    to_sde: AbstractSDE
    outside: str = eqx.field(static=True, default="error")

    def time_and_scale(self, t: RealScalarLike) -> tuple[Any, Any]:
        r"""$(t_{\text{from}}, c)$ for the time $t'$ of `to_sde`: $\lambda_{\text{from}}
        (t_{\text{from}}) = \lambda_{\text{to}}(t')$ and $c = \alpha_{\text{from}}/
        \alpha_{\text{to}} = \sigma_{\text{from}}/\sigma_{\text{to}}$ (the ratio with
        the larger denominator, so that $c$ stays finite at both ends)."""
        t = as_time(t)
        src, dst = self.from_sde, self.to_sde
        lam = dst._lambda(t)
        T = jnp.asarray(src.T, t.dtype)
        lo, hi = src._lambda(T), src._lambda(jnp.zeros_like(t))
        inside = (lam >= lo) & (lam <= hi)
        if self.outside == "error":
            lam = eqx.error_if(
                lam, ~inside,
                "change_sde: the time t of `to_sde` has a signal-to-noise ratio outside "
                "the range of `from_sde` (lambda_to(t) < lambda_from(T) or > "
                "lambda_from(0)); use outside='clip' to evaluate the model at the end "
                "of its range instead.",
            )  # fmt: skip
        ts = src._inverse_lambda(jnp.clip(lam, lo, hi))
        a_to, s_to = dst._alpha(t), dst._sigma(t)
        c = jnp.where(a_to >= s_to, src._alpha(ts) / a_to, src._sigma(ts) / s_to)
        return ts, c

    def __call__(self, t: RealScalarLike, x: Data, *args: Any, **kwargs: Any) -> Data:
        t = self.to_sde._t(t)
        x = jnp.asarray(x)
        ts, c = self.time_and_scale(t.astype(jnp.result_type(x, t)))
        c = c.astype(x.dtype)
        return (c * self.score(ts.astype(x.dtype), c * x, *args, **kwargs)).astype(
            x.dtype
        )


def change_sde(score: Callable, from_sde: AbstractSDE, to_sde: AbstractSDE, *,
               outside: str = "error") -> ChangedScore:  # fmt: skip
    r"""The score of the same model on another path: a VP-trained model sampled on the
    straight path, a rectified-flow model on the Karras grid of the VP SDE, ...

    With $x = \alpha x_0 + \sigma\varepsilon$ on both paths, the time $t$ of
    `from_sde` with the same half log signal-to-noise ratio as the time $t'$ of
    `to_sde`, $\lambda_{\text{from}}(t) = \lambda_{\text{to}}(t')$, has the same
    marginal up to the scale $c = \alpha_{\text{from}}(t)/\alpha_{\text{to}}(t')$:
    $x_{\text{from}} = c\,x_{\text{to}}$, so

    $$s_{\text{to}}(t', x) = c\,s_{\text{from}}(t, c\,x).$$

    Defined where the $\lambda$ ranges overlap: for $\lambda_{\text{to}}(t')$ outside
    $[\lambda_{\text{from}}(T), \lambda_{\text{from}}(0)]$ it raises (`outside="error"`,
    an `eqx.error_if` under `jit`), or evaluates the model at the nearest end of its
    range (`outside="clip"`: the VP SDE's $t = T$ for the last stretch of the straight
    path, where $\lambda_{\text{VP}}(1) \approx -5$ but $\lambda_{\text{RF}}(1) =
    -\infty$, an approximation there).

    **Arguments:**

    - `score`: `score(t, x)` on `from_sde` (a parametrised model or any callable;
      extra arguments are passed on).
    - `from_sde`, `to_sde`: [`sdegen.AbstractSDE`][]s.
    - `outside`: `"error"` (default) or `"clip"`.

    **Returns:** a callable `score(t', x)` on `to_sde`.
    """
    check_score(score)
    check_sde(from_sde, "from_sde")
    check_sde(to_sde, "to_sde")
    check_choice("outside", outside, ("error", "clip"))
    return ChangedScore(score, from_sde, to_sde, outside)

r"""The one place where the four predictions of a diffusion or flow model convert into
one another.

With $x = \alpha x_0 + \sigma\varepsilon$ (all at one time $t$; primes are
$\mathrm{d}/\mathrm{d}t$), the data prediction $D = \mathbb{E}[x_0 \mid x]$ and the
noise prediction $\hat\varepsilon = \mathbb{E}[\varepsilon \mid x]$ satisfy
$x = \alpha D + \sigma\hat\varepsilon$, and

| from | $D$ | $\hat\varepsilon$ |
| --- | --- | --- |
| score $s$ | $(x + \sigma^2 s)/\alpha$ | $-\sigma s$ |
| noise $\hat\varepsilon$ | $(x - \sigma\hat\varepsilon)/\alpha$ | $\hat\varepsilon$ |
| data $D$ | $D$ | $(x - \alpha D)/\sigma$ |
| velocity $v$ | $(\sigma' x - \sigma v)/(\alpha\sigma' - \alpha'\sigma)$ | $(\alpha v - \alpha' x)/(\alpha\sigma' - \alpha'\sigma)$ |

and back: $s = -\hat\varepsilon/\sigma$, $v = \alpha' D + \sigma'\hat\varepsilon$ (the
probability-flow ODE's drift). The velocity row is the inverse of the $2\times2$ system
$x = \alpha D + \sigma\hat\varepsilon$, $v = \alpha' D + \sigma'\hat\varepsilon$, whose
determinant $\alpha\sigma' - \alpha'\sigma = -\alpha\sigma\lambda' > 0$ does not vanish
at $t = T$ of an interpolant: a velocity gives $D$ and $s$ without dividing by
$\alpha$. From a score or a noise prediction, $D$ is $0/0$ where $\alpha = 0$;
[`sdegen.ScoreDrift`][] takes that limit exactly (see `limit_denoise`).
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core._custom_types import Scalar
from ._sde import AbstractSDE


KINDS = ("score", "eps", "x0", "velocity")


def rates(sde: AbstractSDE, t: Scalar) -> tuple[Scalar, Scalar, Scalar, Scalar]:
    r"""$(\alpha, \sigma, \alpha', \sigma')$ at $t$, the derivatives by `jax.jvp` of
    the closed forms (exact: $-1/T$ and $1/T$ on the straight path)."""
    one = jnp.ones_like(t)
    a, da = jax.jvp(sde._alpha, (t,), (one,))
    s, ds = jax.jvp(sde._sigma, (t,), (one,))
    return a, s, da, ds


def to_pair(sde: AbstractSDE, t: Scalar, x, value, kind: str):
    r"""$(D, \hat\varepsilon)$ from a prediction `value` of `kind` (`"score"`,
    `"eps"`, `"x0"` or `"velocity"`) at $(t, x)$, by the table above."""
    a, s, da, ds = rates(sde, t)
    if kind == "score":
        eps = -s * value
        return (x - s * eps) / a, eps
    if kind == "eps":
        return (x - s * value) / a, value
    if kind == "x0":
        return value, (x - a * value) / s
    if kind == "velocity":
        det = a * ds - da * s
        return (ds * x - s * value) / det, (a * value - da * x) / det
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")


def from_pair(sde: AbstractSDE, t: Scalar, d, eps, kind: str):
    r"""The prediction of `kind` from $(D, \hat\varepsilon)$: $s = -\hat\varepsilon/
    \sigma$, $\hat\varepsilon$, $D$ or $v = \alpha' D + \sigma'\hat\varepsilon$."""
    a, s, da, ds = rates(sde, t)
    if kind == "score":
        return -eps / s
    if kind == "eps":
        return eps
    if kind == "x0":
        return d
    if kind == "velocity":
        return da * d + ds * eps
    raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")


def convert(sde: AbstractSDE, t: Scalar, x, value, src: str, dst: str):
    r"""A prediction of kind `src` as one of kind `dst` at $(t, x)$ (the identity
    when they agree; score and noise directly, $s = -\hat\varepsilon/\sigma$, with no
    division by $\alpha$)."""
    x = jnp.asarray(x)
    value = jnp.asarray(value)
    if src == dst:
        return value
    if {src, dst} == {"score", "eps"}:
        return -sde._sigma(t) * value if dst == "eps" else -value / sde._sigma(t)
    d, eps = to_pair(sde, t, x, value, src)
    return from_pair(sde, t, d, eps, dst).astype(value.dtype)


def limit_denoise(sde: AbstractSDE, score_of_t, t: Scalar, x):
    r"""$D(t, x) = \lim_{\tau\to t}(x + \sigma^2 s)/\alpha$ where $\alpha(t) = 0$, by
    l'Hôpital: $D = (2\sigma\sigma' s + \sigma^2\,\partial_t s)/\alpha'$, with
    $\partial_t s$ from one forward-mode evaluation (`jax.jvp` in $t$ of
    `score_of_t(t)`). This is $\mathbb{E}[x_0]$ at $t = T$, which the score's value
    there ($-x/\sigma^2$) does not contain but its time derivative does."""
    s_val, s_dot = jax.jvp(score_of_t, (t,), (jnp.ones_like(t),))
    a, s, da, ds = rates(sde, t)
    return ((2 * s * ds * s_val + s**2 * s_dot) / da).astype(x.dtype)


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def vanishes_at_T(sde: AbstractSDE) -> bool:
    r"""Whether $\alpha(T) = 0$ (an interpolant that ends in pure noise); `True` when
    it cannot be told at trace time (then the samplers guard the point $t = T$).

    The built-in processes give $\alpha(T)$ in Python floats (`_alpha_at_T`); it
    counts as positive only when it is far above the smallest normal float of JAX's
    default dtype, so an $\alpha(T)$ that underflows there is guarded too."""
    try:  # trusted only from the class that also defines this `_alpha` (a subclass
        # that redefines `_alpha` alone is evaluated below)
        same = _owner(type(sde), "_alpha_at_T") is _owner(type(sde), "_alpha")
        a = sde._alpha_at_T() if same else None
    except (jax.errors.ConcretizationTypeError, TypeError):
        return True
    if a is not None:
        return not a > 1e3 * float(jnp.finfo(jnp.result_type(float)).tiny)
    with jax.ensure_compile_time_eval():
        try:
            return float(sde._alpha(jnp.asarray(float(sde.T)))) == 0.0
        except (jax.errors.ConcretizationTypeError, TypeError):
            return True


class AbstractPredictor(eqx.Module):
    r"""A model that predicts one of the four quantities natively (its class variable
    `predicts`: `"score"`, `"eps"`, `"x0"` or `"velocity"`) for the process `sde`.

    Called as `model(t, x, ...)` it returns the score, like any score function; the
    samplers also ask for `prediction(t, x, ...)`, so that the probability-flow ODE of
    a velocity model integrates $v$ itself and an exponential integrator uses a data
    prediction without the division $(x + \sigma^2 s)/\alpha$.
    """

    predicts: ClassVar[str]
    sde: eqx.AbstractVar[AbstractSDE | None]

    @abc.abstractmethod
    def prediction(self, t, x, **kwargs):
        """The native prediction (of kind `predicts`) at `(t, x)`."""

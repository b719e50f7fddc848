r"""SDEs and score functions as diffrax terms.

Given a forward SDE $\mathrm{d}x = f(t)\,x\,\mathrm{d}t + g(t)\,\mathrm{d}W$ and a score
$s(t, x) \approx \nabla_x \log p_t(x)$:

- the reverse-time SDE (Anderson 1982) is
  $\mathrm{d}x = [f(t)x - g(t)^2 s(t, x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W$,
  run from $t = T$ down to $t = \varepsilon$;
- the probability-flow ODE is $\mathrm{d}x = [f(t)x - \tfrac12 g(t)^2 s(t, x)]\,
  \mathrm{d}t$, with the same marginals $p_t$.

All of these are ordinary diffrax terms: hand them to `diffrax.diffeqsolve` with any
solver, step-size controller, `SaveAt` and adjoint. Their drift is a
[`sdegen.ScoreDrift`][], which also exposes the SDE and the score, so that sdegen's
exponential integrators (DDIM, DPM-Solver, EDM) can work with $\alpha(t)$, $\sigma(t)$
and the denoiser instead of the vector field.
"""

import math
from collections.abc import Callable
from typing import Any, Literal

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._core._checks import check_output, check_score
from .._core._custom_types import Data, RealScalarLike, Scalar
from ._conversions import (
    AbstractPredictor,
    limit_denoise,
    rates,
    to_pair,
    vanishes_at_T,
)
from ._sde import AbstractSDE, check_sde


TimeMap = Literal["t", "T-u", "-u"]


def call_score(score: Callable, t: Any, x: Any, args: Any) -> Any:
    """`score(t, x)`; with diffrax `args`: `score(t, x, **args)` for a dict (e.g.
    `{"label": 3}`), else `score(t, x, args)`."""
    if args is None:
        return score(t, x)
    if isinstance(args, dict):
        return score(t, x, **args)
    return score(t, x, args)


def _check_brownian(brownian) -> None:
    if not isinstance(brownian, diffrax.AbstractPath):
        raise ValueError(
            "`brownian` must be a diffrax Brownian path (e.g. diffrax.VirtualBrownianTree "
            f"or sdegen.GridBrownianPath) of the data's shape, got "
            f"{type(brownian).__name__}."
        )


class ScalarDiffusionTerm(diffrax.AbstractTerm):
    r"""The noise term $g(t)\,\mathrm{d}W$ of an SDE whose diffusion is a scalar times
    the identity: the vector field is the scalar $g(t)$ and the product with the
    Brownian increment is elementwise, so it costs $O(D)$ for data of any shape (no
    $D \times D$ matrix). The noise is additive (independent of $x$), so Itô and
    Stratonovich solvers agree and the additive-noise SRK solvers (SRA1, ShARK, SEA)
    apply.
    """

    diffusion: Callable[[RealScalarLike], Scalar]
    control: diffrax.AbstractPath

    def vf(self, t, y, args):
        return self.diffusion(t)

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return jtu.tree_map(lambda c: (vf * c).astype(c.dtype), control)


ScalarDiffusionTerm.__init__.__doc__ = """**Arguments:**

- `diffusion`: a callable `g(t) -> scalar`.
- `control`: a diffrax Brownian path with the data's shape.
"""


def sde_time(sde: AbstractSDE, u: Any, time: TimeMap) -> Any:
    r"""The SDE's time $t$ at the integration time $u$: $t = u$, $t = T - u$ or
    $t = -u$ (the last is exact in floating point)."""
    if time == "t":
        return u
    if time == "T-u":
        return sde.T - u
    return -u


class _Drift(eqx.Module):
    sde: AbstractSDE

    def __call__(self, t, x, args):
        return (self.sde._f(t) * x).astype(jnp.result_type(x))


class _Diffusion(eqx.Module):
    r"""$\eta\,g(t)$; where $\alpha(t) = 0$ (the end $t = T$ of an interpolant, where
    $g = \infty$) it is 0, the probability-flow limit (see [`sdegen.ScoreDrift`][])."""

    sde: AbstractSDE
    time: TimeMap = eqx.field(static=True, default="t")
    scale: float = eqx.field(static=True, default=1.0)

    def __call__(self, u):
        t = sde_time(self.sde, u, self.time)
        g2 = self.sde._g2(t)
        if vanishes_at_T(self.sde):
            g2 = jnp.where(self.sde._alpha(t) == 0, jnp.zeros_like(g2), g2)
        g = jnp.sqrt(g2)
        return g if self.scale == 1.0 else self.scale * g


class EvalCounter:
    """Wraps a score to count its calls while a solver step is traced (see
    `_engine/_integrate.count_evals`). `uncounted` is the score itself: the other
    branch of a `lax.cond` that replaces a counted call (one evaluation either way)."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)

    @property
    def uncounted(self) -> Callable:
        return self.fn


def _same_sde(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(eqx.tree_equal(a, b))
    except Exception:  # traced fields: not provably the same
        return False


class ScoreDrift(eqx.Module):
    r"""The drift $f(t)x - w\,g(t)^2 s(t, x)$ of the reverse-time SDE family
    ($w = (1 + \eta^2)/2$; $w = 1$ the reverse SDE) or of the probability-flow ODE
    ($w = \tfrac12$), as a diffrax vector field `(u, x, args)`, where the integration
    time $u$ maps to the SDE's time by `time`: $t = u$ (`"t"`), $t = T - u$ (`"T-u"`)
    or $t = -u$ (`"-u"`). In the reversed forms $u$ increases as $t$ decreases and the
    sign of the drift flips.

    It also exposes the SDE, the score (`score_at`), the data prediction (`denoise`)
    and the velocity (`velocity`), which sdegen's exponential integrators use. The
    score's output shape is checked against the state when traced.

    **Velocity models and $t = T$ of an interpolant.** For a
    [`sdegen.nn.VelocityParam`][] of the same SDE the drift is written in its
    prediction $v$: $v + (2w - 1)(v - f x)$ ($= v$ for the ODE), and
    $D = (\sigma' x - \sigma v)/(\alpha\sigma' - \alpha'\sigma)$. Where
    $\alpha(t) = 0$ ($t = T$ of [`sdegen.RectifiedFlow`][],
    [`sdegen.CosineInterpolant`][], a [`sdegen.CustomSDE`][] with $\alpha(T) = 0$),
    $f$ and $g$ are infinite; there the drift is the velocity ($\eta = 0$, the
    probability-flow limit, and the diffusion is 0), and for any other model
    $D(T, x) = (2\sigma\sigma' s + \sigma^2\partial_t s)/\alpha'$, the exact limit of
    $(x + \sigma^2 s)/\alpha$, with $\partial_t s$ from one forward-mode evaluation.
    """

    sde: AbstractSDE
    score: Callable
    weight: float = eqx.field(static=True)
    time: TimeMap = eqx.field(static=True, default="t")

    def sde_time(self, u: Any) -> Any:
        return sde_time(self.sde, u, self.time)

    def score_at(self, t: Any, x: Data, args: Any = None) -> Data:
        r"""$s(t, x)$ at the SDE's time $t$, in the dtype of `x`."""
        s = check_output(call_score(self.score, t, x, args), x, "score")
        return s.astype(x.dtype)

    def _velocity_model(self) -> Any:
        """The model, if it predicts the velocity of this very SDE (else `None`)."""
        m = self.score.uncounted if isinstance(self.score, EvalCounter) else self.score
        if isinstance(m, AbstractPredictor) and m.predicts == "velocity" and _same_sde(
            m.sde, self.sde
        ):
            return self.score
        return None

    def _v_native(self, model: Any, t: Any, x: Data, args: Any) -> Data:
        if isinstance(model, EvalCounter):  # one evaluation of the model
            model.calls += 1
            model = model.fn
        v = call_score(model.prediction, t, x, args)
        return check_output(v, x, "velocity").astype(x.dtype)

    def _limit_d(self, t: Any, x: Data, args: Any) -> Data:
        r"""$D$ where $\alpha(t) = 0$, from the score's time derivative (uncounted: it
        replaces the plain evaluation in a `lax.cond`)."""
        fn = self.score.uncounted if isinstance(self.score, EvalCounter) else self.score
        return limit_denoise(self.sde, lambda tt: call_score(fn, tt, x, args), t, x)

    def _guard(self) -> bool:
        return vanishes_at_T(self.sde)

    def denoise(self, t: Any, x: Data, args: Any = None) -> Data:
        r"""The data prediction $D(t, x) = (x + \sigma(t)^2 s(t, x))/\alpha(t)$ at the
        SDE's time $t$ (Tweedie's denoiser; the data prediction of DPM-Solver++ and
        EDM), from a velocity model's $v$ directly, and as the exact limit where
        $\alpha(t) = 0$."""
        model = self._velocity_model()
        if model is not None:
            v = self._v_native(model, t, x, args)
            return to_pair(self.sde, t, x, v, "velocity")[0].astype(x.dtype)

        def plain():
            sig2 = self.sde._sigma(t) ** 2
            d = (x + sig2 * self.score_at(t, x, args)) / self.sde._alpha(t)
            return d.astype(x.dtype)

        if not self._guard():
            return plain()
        return lax.cond(self.sde._alpha(t) == 0, lambda: self._limit_d(t, x, args), plain)

    def denoise_limit(self, t: Any, x: Data, args: Any = None) -> Data:
        r"""`denoise` at a time where $\alpha(t) = 0$, for a solver's first step from
        $\lambda = -\infty$ inside a `lax.cond` (uncounted, see `EvalCounter`)."""
        model = self._velocity_model()
        if model is not None:
            fn = model.uncounted if isinstance(model, EvalCounter) else model
            v = call_score(fn.prediction, t, x, args).astype(x.dtype)
            return to_pair(self.sde, t, x, v, "velocity")[0].astype(x.dtype)
        return self._limit_d(t, x, args)

    def velocity(self, t: Any, x: Data, args: Any = None) -> Data:
        r"""The velocity $v(t, x) = \alpha' D + \sigma'\hat\varepsilon$, the
        probability-flow ODE's drift (a velocity model's own prediction; from a
        score $f x - \tfrac12 g^2 s$, and $\alpha' D + \sigma'(-\sigma s)$ with the
        limit $D$ where $\alpha(t) = 0$)."""
        model = self._velocity_model()
        if model is not None:
            return self._v_native(model, t, x, args)
        return self._from_score(t, x, args, 0.5)

    def _from_score(self, t, x, args, weight):
        def plain():
            out = self.sde._f(t) * x - weight * self.sde._g2(t) * self.score_at(
                t, x, args
            )
            return out.astype(jnp.result_type(x))

        if not self._guard():
            return plain()

        def limit():  # alpha = 0: x = sigma eps_hat, and D the exact limit
            a, sig, da, ds = rates(self.sde, t)
            out = da * self._limit_d(t, x, args) + ds * x / sig
            return out.astype(jnp.result_type(x))

        return lax.cond(self.sde._alpha(t) == 0, limit, plain)

    def __call__(self, u, x, args):
        t = self.sde_time(u)
        model = self._velocity_model()
        if model is None:
            out = self._from_score(t, x, args, self.weight)
        else:
            out = self._v_native(model, t, x, args)
            if self.weight != 0.5:
                f = self.sde._f(t)
                f = jnp.where(self.sde._alpha(t) == 0, jnp.zeros_like(f), f)
                out = (out + (2 * self.weight - 1) * (out - f * x)).astype(x.dtype)
        return out if self.time == "t" else -out


ScoreDrift.__init__.__doc__ = r"""**Arguments:**

- `sde`: the forward [`sdegen.AbstractSDE`][].
- `score`: `score(t, x)` for one example (called as `score(t, x, **args)` when diffrax
  `args` is a dict, `score(t, x, args)` for other non-`None` args).
- `weight`: 1 for the reverse SDE, 0.5 for the probability-flow ODE, $(1 + \eta^2)/2$
  for the member $\eta$ of the family (see [`sdegen.reverse_terms`][]).
- `time`: `"t"`, `"T-u"` or `"-u"`, how the integration time maps to the SDE's time.
"""


def forward_terms(sde: AbstractSDE, brownian: diffrax.AbstractPath) -> diffrax.MultiTerm:
    r"""The forward SDE $\mathrm{d}x = f(t)\,x\,\mathrm{d}t + g(t)\,\mathrm{d}W$ as
    `MultiTerm(ODETerm(f), ScalarDiffusionTerm(g, brownian))`, to integrate from
    $t_0 = 0$ to $t_1 \le T$.

    **Arguments:**

    - `sde`: an [`sdegen.AbstractSDE`][].
    - `brownian`: a diffrax Brownian path over $[0, T]$ with the data's shape.

    **Returns:** a `diffrax.MultiTerm`.
    """
    check_sde(sde)
    _check_brownian(brownian)
    return diffrax.MultiTerm(
        diffrax.ODETerm(_Drift(sde)), ScalarDiffusionTerm(_Diffusion(sde), brownian)
    )


def _time_map(reversed_time: bool | str) -> TimeMap:
    if reversed_time is True:
        return "T-u"
    if reversed_time is False:
        return "t"
    if reversed_time in ("t", "T-u", "-u"):
        return reversed_time
    raise ValueError(
        f"`reversed_time` must be True, False, 'T-u' or '-u', got {reversed_time!r}."
    )


def reverse_terms(
    sde: AbstractSDE,
    score: Callable,
    brownian: diffrax.AbstractPath,
    *,
    reversed_time: bool | str = False,
    noise_scale: float = 1.0,
) -> diffrax.MultiTerm:
    r"""The reverse-time SDE
    $\mathrm{d}x = [f(t)x - g(t)^2 \nabla_x\log p_t(x)]\,\mathrm{d}t + g(t)\,
    \mathrm{d}\bar W$ (Anderson 1982; Song et al. 2021, eq. 6), or with
    `noise_scale` $\eta$ the family
    $\mathrm{d}x = [f x - \tfrac{1 + \eta^2}{2} g^2 s]\,\mathrm{d}t + \eta g\,
    \mathrm{d}\bar W$ with the same marginals ($\eta = 0$ the probability-flow ODE,
    $\eta = 1$ the reverse SDE, $\eta > 1$ more noise).

    By default the terms are written in the SDE's own time $t$: integrate from
    $t_0 = T$ to $t_1 = \varepsilon$ with a negative `dt0`, using a Brownian path over
    $[\varepsilon, T]$.

    With `reversed_time=True` they are written in $u = T - t$ instead,
    $\mathrm{d}x = -[f(T-u)x - g(T-u)^2 s(T-u, x)]\,\mathrm{d}u + g(T-u)\,
    \mathrm{d}W_u$, to integrate *forwards* from $u_0 = 0$ to $u_1 = T - \varepsilon$
    with a Brownian path over $[0, T - \varepsilon]$. This form is correct for every
    diffrax solver; diffrax's stochastic Runge–Kutta solvers (SRA1, ShARK, SPaRK, ...)
    are wrong when integrating backwards in time (diffrax issue 598), so use it with
    them. `reversed_time="-u"` writes them in $u = -t$ (from $-T$ to
    $-\varepsilon$), which sdegen's samplers use because $t = -u$ is exact in floating
    point.

    **Arguments:**

    - `sde`: an [`sdegen.AbstractSDE`][].
    - `score`: a callable `score(t, x)` for one example (diffrax `args` are passed on,
      see [`sdegen.ScoreDrift`][]).
    - `brownian`: a diffrax Brownian path with the data's shape.
    - `reversed_time`: `False`, `True` (the same as `"T-u"`) or `"-u"`.
    - `noise_scale`: $\eta \ge 0$, a Python float (default 1).

    **Returns:** a `diffrax.MultiTerm` of the drift and the noise.
    """
    check_sde(sde)
    check_score(score)
    _check_brownian(brownian)
    time = _time_map(reversed_time)
    eta = check_noise_scale(noise_scale)
    weight = 1.0 if eta == 1.0 else 0.5 * (1.0 + eta**2)
    return diffrax.MultiTerm(
        diffrax.ODETerm(ScoreDrift(sde, score, weight, time)),
        ScalarDiffusionTerm(_Diffusion(sde, time, eta), brownian),
    )


def check_noise_scale(noise_scale: Any) -> float:
    r"""`noise_scale` $\eta$ as a Python float: finite and $\ge 0$ (it fixes the
    compiled terms), or a `ValueError` naming it."""
    try:
        eta = float(noise_scale)
    except (TypeError, jax.errors.ConcretizationTypeError):
        raise ValueError(
            "`noise_scale` must be a Python float >= 0 (it is static: one compiled "
            f"sampler per value), got {type(noise_scale).__name__}."
        ) from None
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"`noise_scale` must be finite and >= 0, got {eta}.")
    return eta


def probability_flow_term(
    sde: AbstractSDE, score: Callable, *, reversed_time: bool | str = False
) -> diffrax.ODETerm:
    r"""The probability-flow ODE $\frac{\mathrm{d}x}{\mathrm{d}t} = f(t)x -
    \tfrac12 g(t)^2 \nabla_x \log p_t(x)$ (Song et al. 2021, eq. 13), whose solution has
    the same marginals $p_t$ as the SDE.

    Integrate from $\varepsilon$ to $T$ to encode data, or from $T$ to $\varepsilon$ to
    sample (ODEs may be solved backwards in diffrax). With `reversed_time=True` the
    term is written in $u = T - t$ (integrate forwards from $0$ to $T - \varepsilon$
    to sample); `"-u"` writes it in $u = -t$.

    **Returns:** a `diffrax.ODETerm` whose vector field is a [`sdegen.ScoreDrift`][].
    """
    check_sde(sde)
    check_score(score)
    return diffrax.ODETerm(ScoreDrift(sde, score, 0.5, _time_map(reversed_time)))


def drift_of(terms: Any, who: str) -> tuple["ScoreDrift", Any]:
    """`(drift, noise_term)` of the terms of [`sdegen.probability_flow_term`][]
    (`noise_term` is `None`) or [`sdegen.reverse_terms`][]; a `ValueError` naming
    `who` (a solver) for any other terms."""
    noise = None
    if isinstance(terms, diffrax.MultiTerm) and len(terms.terms) == 2:
        terms, noise = terms.terms
    vf = getattr(terms, "vector_field", None)
    if not isinstance(terms, diffrax.ODETerm) or not isinstance(vf, ScoreDrift):
        raise ValueError(
            f"{who} works on the terms of sdegen.probability_flow_term or "
            "sdegen.reverse_terms (it needs the SDE's alpha(t), sigma(t) and the "
            f"score), got {type(terms).__name__}."
        )
    return vf, noise

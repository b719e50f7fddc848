r"""SDEs from a user's schedule, in one line: [`sdegen.CustomSDE`][] from $\alpha(t)$
and $\sigma(t)$, [`sdegen.BetaSDE`][] from $\beta(t)$.

For a linear SDE the whole process follows from its marginal coefficients:
$f = \mathrm{d}\log\alpha/\mathrm{d}t$ and $g^2 = \mathrm{d}\sigma^2/\mathrm{d}t -
2f\sigma^2$, derivatives taken by `jax.jvp` (exact, no hand-written derivatives), and
$t(\lambda)$ by bisection on the strictly decreasing $\lambda(t) = \log(\alpha/\sigma)$.
"""

import math
from collections.abc import Callable

import jax
import jax.lax as lax
import jax.numpy as jnp
import numpy as np

from .._core._checks import check_callable, check_choice, concrete_float
from .._core._custom_types import RealScalarLike, Scalar
from .._core._misc import is_concrete
from ._sde import AbstractSDE, as_time, check_T


def bisect_decreasing(fn: Callable, target: Scalar, lo, hi, iters: int = 64) -> Scalar:
    r"""The $t \in [\mathrm{lo}, \mathrm{hi}]$ with $\mathrm{fn}(t) = $ `target` for a
    decreasing `fn`, by `iters` halvings of the bracket (clipped to the ends)."""
    dtype = jnp.result_type(target, float)
    lo = jnp.asarray(lo, dtype)
    hi = jnp.asarray(hi, dtype)

    def body(_, bracket):
        a, b = bracket
        m = 0.5 * (a + b)
        above = fn(m) > target  # fn decreasing: the root lies to the right of m
        return jnp.where(above, m, a), jnp.where(above, b, m)

    a, b = lax.fori_loop(0, iters, body, (lo, hi))
    return 0.5 * (a + b)


def _derivative(fn: Callable, t: Scalar) -> Scalar:
    return jax.jvp(fn, (t,), (jnp.ones_like(t),))[1]


def _validate_schedule(sde: AbstractSDE, what: str) -> None:
    r"""On a grid of $(0, T]$: $\alpha, \sigma > 0$ ($\alpha(T) = 0$ allowed: an
    interpolant ending in pure noise), $\lambda$ strictly decreasing and $g^2 \ge 0$
    (skipped when the schedule holds traced values)."""
    ts = np.linspace(0.0, float(sde.T), 129)[1:]
    try:
        vals = [np.asarray(jax.vmap(f)(jnp.asarray(ts))) for f in
                (sde._alpha, sde._sigma, sde._g2)]  # fmt: skip
    except jax.errors.ConcretizationTypeError:
        return
    a, s, g2 = vals
    if not (np.all(np.isfinite(a)) and np.all(a[:-1] > 0) and a[-1] >= 0):
        raise ValueError(
            f"`{what}`: alpha(t) must be finite and > 0 on (0, T) and >= 0 at T."
        )
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"`{what}`: sigma(t) must be finite and > 0 on (0, T].")
    if a[-1] == 0:  # lambda(T) = -inf and g(T)^2 = inf: check the open interval
        a, s, g2 = a[:-1], s[:-1], g2[:-1]
    lam = np.log(a) - np.log(s)
    if not np.all(np.diff(lam) < 0):
        raise ValueError(
            f"`{what}`: the signal-to-noise ratio alpha(t)/sigma(t) must strictly "
            "decrease in t (noise must grow relative to the signal)."
        )
    if not np.all(g2 >= -1e-9 * np.max(np.abs(g2))):
        raise ValueError(
            f"`{what}`: g(t)^2 = d sigma^2/dt - 2 (d log alpha/dt) sigma^2 must be >= 0; "
            "this schedule is not the marginal of a forward SDE."
        )


def _on_grid(fn: Callable, ts: np.ndarray, name: str) -> np.ndarray | None:
    """`fn` on the times `ts` (traced through `jax.vmap`, as the samplers call it); `None`
    when the values are traced (a schedule built under `jit`: cannot be checked now).
    A function that works on Python floats but not on traced times is an error."""
    try:
        out = jax.vmap(fn)(jnp.asarray(ts))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError,
            jax.errors.TracerArrayConversionError, TypeError) as e:  # fmt: skip
        try:
            [float(fn(float(t))) for t in ts[:2]]
        except Exception:  # noqa: BLE001 - not even on floats: let the caller see it
            raise e from None
        raise ValueError(
            f"`{name}` must be JAX-traceable (the samplers call it on traced times "
            f"under jit), but calling it on a traced t failed ({type(e).__name__}); "
            "use jnp functions and jnp.where instead of math functions and `if`."
        ) from None
    if not is_concrete(out):
        return None
    out = np.asarray(out, np.float64)
    if out.shape != ts.shape:
        raise ValueError(f"`{name}(t)` must return a scalar, got shape {out.shape[1:]}.")
    return out


def _validate_beta(sde: "BetaSDE") -> None:
    r"""$\beta \ge 0$ and finite on $[0, T]$, and a given `integral` equal to the
    quadrature of $\beta$: $|B(t) - \int_0^t\beta| \le 10^{-3}(1 + |B(t)|)$ on a
    grid (the quadrature is exact to float precision for smooth $\beta$)."""
    ts = np.linspace(0.0, float(sde.T), 65)
    beta = _on_grid(sde.beta_fn, ts, "beta")
    if beta is None:
        return
    bad = ~np.isfinite(beta) | (beta < 0)
    if np.any(bad):
        k = int(np.argmax(bad))
        raise ValueError(
            f"`beta`: beta(t) must be finite and >= 0 on [0, T], got beta({ts[k]:.4g}) "
            f"= {beta[k]}."
        )
    if sde.integral_fn is None:
        return
    given = _on_grid(sde.integral_fn, ts, "integral")
    if given is None:
        return
    nodes = ts[1:, None] * _GL_X[None]
    quad = np.concatenate([[0.0], ts[1:] * np.sum(
        _GL_W * _on_grid(sde.beta_fn, nodes.ravel(), "beta").reshape(nodes.shape),
        axis=1)])  # fmt: skip
    err = np.abs(given - quad)
    if not np.all(err <= 1e-3 * (1 + np.abs(quad))):
        k = int(np.argmax(err / (1 + np.abs(quad))))
        raise ValueError(
            f"`integral` contradicts `beta`: integral({ts[k]:.4g}) = {given[k]:.6g}, but "
            f"the integral of beta from 0 to {ts[k]:.4g} is {quad[k]:.6g} (tolerance "
            "1e-3 (1 + |B|)). Pass the integral of beta, or omit `integral`."
        )


class CustomSDE(AbstractSDE):
    r"""The linear SDE whose marginals are $\mathcal{N}(\alpha(t) x_0, \sigma(t)^2 I)$
    for your own $\alpha(t)$ and $\sigma(t)$:

    $$\mathrm{d}x = f(t)\,x\,\mathrm{d}t + g(t)\,\mathrm{d}W,\qquad
    f = \frac{\mathrm{d}\log\alpha}{\mathrm{d}t},\quad
    g^2 = \frac{\mathrm{d}\sigma^2}{\mathrm{d}t} - 2f\sigma^2,$$

    with the derivatives from `jax.jvp`. The prior is $\mathcal{N}(0, s^2 I)$ with
    $s = \sigma(T)$ unless `prior_std` is given. $\alpha(T) = 0$ is allowed (an
    interpolant that ends in pure noise, where the prior $\mathcal{N}(0, \sigma(T)^2 I)$
    is exact): there $f$ and $g^2$ are infinite, and the samplers start at $T$ itself
    through the velocity (see [`sdegen.RectifiedFlow`][]).

    !!! example

        ```python
        # the cosine schedule of Nichol & Dhariwal 2021, in one line
        sde = sg.CustomSDE(alpha=lambda t: jnp.cos(0.5 * jnp.pi * (t + 0.008) / 1.008),
                           sigma=lambda t: jnp.sin(0.5 * jnp.pi * (t + 0.008) / 1.008),
                           T=0.999)
        ```
    """

    alpha_fn: Callable
    sigma_fn: Callable
    T: float = 1.0
    prior_scale: float | None = None

    def __init__(self, alpha: Callable, sigma: Callable, T: float = 1.0,
                 prior_std: float | None = None):  # fmt: skip
        check_callable("alpha", alpha, "alpha(t) -> scalar")
        check_callable("sigma", sigma, "sigma(t) -> scalar")
        self.alpha_fn = alpha
        self.sigma_fn = sigma
        self.T = T
        self.prior_scale = prior_std

    def __check_init__(self):
        check_T(self.T)
        if self.prior_scale is not None:
            v = concrete_float("prior_std", self.prior_scale)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"`prior_std` must be finite and > 0, got {v}.")
        _validate_schedule(self, "CustomSDE")

    def _alpha(self, t):
        return jnp.asarray(self.alpha_fn(t))

    def _sigma(self, t):
        return jnp.asarray(self.sigma_fn(t))

    def _f(self, t):
        return _derivative(lambda s: jnp.log(self._alpha(s)), t)

    def _g2(self, t):
        return _derivative(lambda s: self._sigma(s) ** 2, t) - 2 * self._f(t) * (
            self._sigma(t) ** 2
        )

    def _inverse_lambda(self, lam):
        return bisect_decreasing(self._lambda, lam, 0.0, self.T)

    @property
    def prior_std(self) -> float:
        if self.prior_scale is not None:
            return self.prior_scale
        s = self._sigma(jnp.asarray(float(self.T)))
        return float(s) if is_concrete(s) else s


# Gauss–Legendre nodes and weights on [0, 1]: exact for polynomials of degree < 64.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
_GL_X, _GL_W = 0.5 * (_GL_X + 1), 0.5 * _GL_W


class BetaSDE(AbstractSDE):
    r"""A variance-preserving (or sub-VP) SDE with your own noise rate $\beta(t) \ge 0$:

    $$\mathrm{d}x = -\tfrac12\beta(t)\,x\,\mathrm{d}t + \sqrt{\beta(t)\,c(t)}\,
    \mathrm{d}W,\qquad B(t) = \int_0^t\beta,$$

    with $c = 1$ (`kind="vp"`: $\alpha = e^{-B/2}$, $\sigma = \sqrt{1 - e^{-B}}$) or
    $c = 1 - e^{-2B}$ (`kind="subvp"`: $\sigma = 1 - e^{-B}$). $B(t)$ is `integral(t)`
    when you give it, else 32-point Gauss–Legendre quadrature (exact for polynomial
    $\beta$ of degree $< 64$). $f$ and $g^2$ use $\beta(t)$ itself. Prior
    $\mathcal{N}(0, I)$.

    !!! example

        ```python
        sde = sg.BetaSDE(lambda t: 0.1 + 19.9 * t)     # the VPSDE, by quadrature
        sde = sg.BetaSDE(lambda t: 2.0 + 0 * t)         # a constant beta
        ```
    """

    beta_fn: Callable
    integral_fn: Callable | None
    kind: str
    T: float

    def __init__(self, beta: Callable, T: float = 1.0, *, kind: str = "vp",
                 integral: Callable | None = None):  # fmt: skip
        check_callable("beta", beta, "beta(t) -> scalar")
        if integral is not None:
            check_callable("integral", integral, "integral(t) -> scalar")
        self.beta_fn = beta
        self.integral_fn = integral
        self.kind = check_choice("kind", kind, ("vp", "subvp"))
        self.T = T

    def __check_init__(self):
        check_T(self.T)
        _validate_beta(self)
        _validate_schedule(self, "BetaSDE")

    def beta(self, t: RealScalarLike) -> Scalar:
        r"""$\beta(t)$."""
        return self._beta(self._t(t))

    def integral_beta(self, t: RealScalarLike) -> Scalar:
        r"""$B(t) = \int_0^t\beta(s)\,\mathrm{d}s$."""
        return self._integral(self._t(t))

    def _beta(self, t):
        return jnp.asarray(self.beta_fn(t))

    def _integral(self, t):
        if self.integral_fn is not None:
            return jnp.asarray(self.integral_fn(t))
        t = as_time(t)
        nodes = jnp.asarray(_GL_X, t.dtype) * t
        return t * jnp.sum(jnp.asarray(_GL_W, t.dtype) * jax.vmap(self._beta)(nodes))

    def _alpha(self, t):
        return jnp.exp(-0.5 * self._integral(t))

    def _sigma(self, t):
        v = -jnp.expm1(-self._integral(t))
        return jnp.sqrt(v) if self.kind == "vp" else v

    def _f(self, t):
        return -0.5 * self._beta(t)

    def _g2(self, t):
        if self.kind == "vp":
            return self._beta(t)
        return self._beta(t) * -jnp.expm1(-2 * self._integral(t))

    def _inverse_lambda(self, lam):
        return bisect_decreasing(self._lambda, lam, 0.0, self.T)

    @property
    def prior_std(self) -> float:
        return 1.0


CustomSDE.__init__.__doc__ = r"""**Arguments:**

- `alpha`: a callable $\alpha(t) > 0$ of a scalar time (JAX-traceable); $\alpha(T)
  = 0$ is allowed (write it so that it is exactly 0, e.g. `lambda t: 1 - t`).
- `sigma`: a callable $\sigma(t) > 0$ for $t > 0$, with $\alpha/\sigma$ strictly
  decreasing.
- `T`: the final time (default 1).
- `prior_std`: the prior's standard deviation (default $\sigma(T)$).

**Raises:** `ValueError` if the schedule is not that of a forward SDE (checked on a grid
of $(0, T]$).
"""
BetaSDE.__init__.__doc__ = r"""**Arguments:**

- `beta`: a callable $\beta(t) \ge 0$ of a scalar time (JAX-traceable).
- `T`: the final time (default 1).
- `kind`: `"vp"` or `"subvp"`.
- `integral`: optionally the closed form of $B(t) = \int_0^t\beta$.

**Raises:** `ValueError` naming `beta` if $\beta$ is negative or not finite on
$[0, T]$, or cannot be traced by JAX; naming `integral` if it differs from the
quadrature of $\beta$ (by more than $10^{-3}(1 + |B|)$ on a grid of 65 times).
"""

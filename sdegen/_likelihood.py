r"""Exact likelihoods through the probability-flow ODE, and bits per dimension.

The probability-flow ODE $\dot x = \tilde f(x, t) = f(x, t) - \tfrac12 g(t)^2
\nabla_x\log p_t(x)$ transports $p_\varepsilon$ to $p_T$. Along a solution the
instantaneous change of variables (Chen et al. 2018, "Neural Ordinary Differential
Equations") gives $\frac{\mathrm{d}}{\mathrm{d}t}\log p_t(x(t)) =
-\nabla\cdot\tilde f(x(t), t)$, hence

$$\log p_\varepsilon(x) = \log p_T(x(T))
+ \int_\varepsilon^T \nabla\cdot\tilde f(x(t), t)\,\mathrm{d}t,$$

with $p_T$ replaced by the SDE's prior (Song et al. 2021, "Score-Based Generative
Modeling through Stochastic Differential Equations", §4.3 and appendix D.2). The state
$x$ and the running integral are solved together, as one augmented ODE, in a single
`diffrax.diffeqsolve`.

The divergence is the exact Jacobian trace (one Jacobian–vector product per input
dimension: for low dimension), or the Hutchinson–Skilling estimate
$\nabla\cdot\tilde f \approx \frac1m\sum_{j=1}^m v_j^\top (\partial_x\tilde f)\, v_j$
with probes $v_j$, $\mathbb{E}[v v^\top] = I$, drawn once and held fixed over the solve
(Grathwohl et al. 2019, "FFJORD"; Hutchinson 1989; Skilling 1989).
"""

import math
from collections.abc import Callable, Iterator
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Shaped

from ._checks import as_float_array, concrete_float, error_if_not_finite
from ._custom_types import BatchLike, Data, DataLike, KeyArray, RealScalarLike, Scalar
from ._misc import is_concrete
from ._sde import AbstractSDE
from ._solver_table import solver as get_solver
from ._terms import _check_score, _check_sde, _ScoreDrift


_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian", "orthogonal")


# ---------------------------------------------------------------- statistics


class LikelihoodStats(eqx.Module):
    r"""Diagnostics of one likelihood solve (batched along a leading axis when the
    call is vmapped or batched). Read fields as attributes or as `stats["nfe"]`.

    - `nfe`: number of evaluations of the augmented vector field (each is one call of
      the drift and one divergence: $D$ JVPs for the exact trace, `num_probes` JVPs
      for Hutchinson), counted from the solver's Butcher tableau and the number of
      steps (accepted and rejected). (diffrax's automatic initial step costs no
      evaluation; the test suite checks the count against a counting vector field.)
    - `num_steps`, `num_accepted_steps`: as reported by diffrax.
    - `prior_logp`: $\log p_T(x(T))$ under the prior.
    - `delta_logp`: $\int_\varepsilon^T \nabla\cdot\tilde f\,\mathrm{d}t$.
    - `z`: the latent $x(T)$.
    - `result`: diffrax's result code (`diffrax.RESULTS.successful` when all went well).
    - `num_probes`: Hutchinson probes per evaluation (0 for the exact trace).
    """

    nfe: Int[Array, "*batch"]
    num_steps: Int[Array, "*batch"]
    num_accepted_steps: Int[Array, "*batch"]
    prior_logp: Float[Array, "*batch"]
    delta_logp: Float[Array, "*batch"]
    z: Array
    result: Any
    num_probes: int = eqx.field(static=True, default=0)

    def keys(self) -> tuple[str, ...]:
        return (
            "nfe",
            "num_steps",
            "num_accepted_steps",
            "prior_logp",
            "delta_logp",
            "z",
            "result",
            "num_probes",
        )

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


# ---------------------------------------------------------------- the augmented ODE


class _AugmentedDrift(eqx.Module):
    r"""Vector field of the augmented state $(x, \ell)$:
    $(\dot x, \dot\ell) = (\tilde f(x, t), \nabla\cdot\tilde f(x, t))$. `args` holds
    the Hutchinson probes (stacked on a leading axis), or `None` for the exact trace."""

    drift: _ScoreDrift
    trace: str = eqx.field(static=True)

    def __call__(self, t, y, args):
        x, _ = y
        fn = lambda x_: self.drift(t, x_, None)
        if self.trace == "exact":
            d = x.size
            probes = jnp.eye(d, dtype=x.dtype).reshape((d,) + x.shape)
        else:
            probes = args
        jvp = lambda v: jax.jvp(fn, (x,), (v,))
        fx, jvs = jax.vmap(jvp, out_axes=(None, 0))(probes)
        if self.trace == "exact":
            div = jnp.trace(jvs.reshape(d, d))
        else:
            div = jnp.mean(jnp.sum((probes * jvs).reshape(probes.shape[0], -1), axis=1))
        return fx, div.astype(x.dtype)


def _draw_probes(key, x, num_probes: int, probe: str):
    shape = (num_probes,) + x.shape
    if probe == "rademacher":
        return jr.rademacher(key, shape, dtype=x.dtype)
    if probe == "gaussian":
        return jr.normal(key, shape, dtype=x.dtype)
    # "orthogonal": the first m columns of a Haar-random orthogonal matrix, scaled by
    # sqrt(D) so that E[v v^T] = I; m = D gives the exact trace.
    d = x.size
    g = jr.normal(key, (d, num_probes), dtype=x.dtype)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return (math.sqrt(d) * q.T).reshape(shape)


def _nfe(solver, num_steps):
    if isinstance(solver, diffrax.AbstractRungeKutta):
        tab = solver.tableau
        stages = tab.num_stages
        if tab.fsal:
            # the first step evaluates its first stage; later steps reuse the last one
            nfe = num_steps * (stages - 1) + 1
        else:
            nfe = num_steps * stages
    else:
        # Euler and other one-evaluation-per-step solvers
        nfe = num_steps
    return nfe


@eqx.filter_jit
def _solve(sde, score, x, probes, eps, solver, controller, dt0, adjoint, max_steps,
           throw, trace, prior_logp, batched):  # fmt: skip
    drift = _ScoreDrift(sde, score, 0.5)
    field = _AugmentedDrift(drift, "exact" if trace == "exact" else "hutchinson")
    if batched:
        in_axes = (None, 0, None if probes is None else 0)
        vf = lambda t, y, args: jax.vmap(field, in_axes=in_axes)(t, y, args)
        delta0 = jnp.zeros(x.shape[:1], x.dtype)
    else:
        vf = field
        delta0 = jnp.zeros((), x.dtype)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        solver,
        jnp.asarray(eps, x.dtype),
        jnp.asarray(sde.T, x.dtype),
        dt0,
        (x, delta0),
        args=probes,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
    )
    z, delta = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    if prior_logp is None:
        prior_logp = sde.prior_logp
    if batched:
        prior = jax.vmap(prior_logp)(z)
    else:
        prior = prior_logp(z)
    prior = jnp.asarray(prior).astype(x.dtype)
    num_steps = jnp.asarray(sol.stats["num_steps"])
    nfe = jnp.asarray(_nfe(solver, num_steps))
    num_accepted = jnp.asarray(sol.stats["num_accepted_steps"])
    result = sol.result
    if batched:
        # the shared solve's counters and result code, repeated for every example
        b = (x.shape[0],)
        nfe, num_steps, num_accepted = (
            jnp.broadcast_to(a, b) for a in (nfe, num_steps, num_accepted)
        )
        result = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, b), result)
    stats = LikelihoodStats(
        nfe=nfe,
        num_steps=num_steps,
        num_accepted_steps=num_accepted,
        prior_logp=prior,
        delta_logp=delta,
        z=z,
        result=result,
        num_probes=0 if probes is None else probes.shape[1 if batched else 0],
    )
    return prior + delta, stats


# ---------------------------------------------------------------- validation


def _check_options(sde, score, solver, rtol, atol, trace, eps, num_probes, probe,
                   adjoint, num_steps, prior_logp):  # fmt: skip
    _check_sde(sde)
    _check_score(score)
    if trace not in _TRACES:
        raise ValueError(f"`trace` must be one of {_TRACES}, got {trace!r}.")
    if probe not in _PROBES:
        raise ValueError(f"`probe` must be one of {_PROBES}, got {probe!r}.")
    if isinstance(num_probes, bool) or int(num_probes) != num_probes or num_probes < 1:
        raise ValueError(f"`num_probes` must be a positive int, got {num_probes!r}.")
    v = concrete_float("eps", eps)
    if v is not None and not (0 < v < sde.T):
        raise ValueError(f"`eps` must satisfy 0 < eps < T = {sde.T}, got {v}.")
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise ValueError(
            "`adjoint` must be a diffrax.AbstractAdjoint (e.g. "
            "diffrax.RecursiveCheckpointAdjoint() or diffrax.BacksolveAdjoint()), got "
            f"{type(adjoint).__name__}."
        )
    if prior_logp is not None and not callable(prior_logp):
        raise ValueError(
            f"`prior_logp` must be a callable z -> scalar or None, got "
            f"{type(prior_logp).__name__}."
        )
    solver_obj = get_solver(solver, kind="ode")
    if num_steps is None:
        for name, tol in (("rtol", rtol), ("atol", atol)):
            c = concrete_float(name, tol)
            if c is not None and not (math.isfinite(c) and c > 0):
                raise ValueError(f"`{name}` must be finite and > 0, got {c}.")
        if not isinstance(solver_obj, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"`solver` {solver!r} has no error estimate, so it cannot step "
                "adaptively; give `num_steps` for fixed steps, or use e.g. 'tsit5'."
            )
        # arrays, not Python floats: a new tolerance must not trigger a recompile
        controller = diffrax.PIDController(
            rtol=jnp.asarray(rtol), atol=jnp.asarray(atol)
        )
    else:
        if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
            raise ValueError(f"`num_steps` must be a positive int, got {num_steps!r}.")
        controller = diffrax.ConstantStepSize()
    return solver_obj, controller


def _probes_for(key, x, trace, num_probes, probe):
    if trace == "exact":
        return None
    if key is None:
        raise ValueError(
            "`key` is required for trace='hutchinson' (it draws the probe vectors); "
            "pass e.g. key=jax.random.key(0)."
        )
    return _draw_probes(key, x, int(num_probes), probe)


def _check_orthogonal(probe, num_probes, d):
    if probe == "orthogonal" and num_probes > d:
        raise ValueError(
            f"`num_probes` must be at most the data dimension {d} for "
            f"probe='orthogonal', got {num_probes}."
        )


# ---------------------------------------------------------------- public API


def log_likelihood(
    sde: AbstractSDE,
    score: Callable,
    x: DataLike,
    key: KeyArray | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    trace: str = "exact",
    eps: RealScalarLike = 1e-5,
    *,
    num_probes: int = 1,
    probe: str = "rademacher",
    adjoint: Any = diffrax.RecursiveCheckpointAdjoint(),
    num_steps: int | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 16**4,
    prior_logp: Callable | None = None,
    throw: bool = True,
) -> tuple[Scalar, LikelihoodStats]:
    r"""Log-likelihood of one example under the model defined by a score and an SDE,
    through the probability-flow ODE (Song et al. 2021, §4.3):

    $$\log p_\varepsilon(x) = \log p_T(x(T)) + \int_\varepsilon^T
    \nabla\cdot\tilde f(x(t), t)\,\mathrm{d}t, \qquad
    \tilde f(x, t) = f(x, t) - \tfrac12 g(t)^2 s(t, x),$$

    where $x(\cdot)$ solves $\dot x = \tilde f$ from $x(\varepsilon) = x$ and $p_T$ is
    the SDE's prior. $x$ and the integral are solved together in one jitted
    `diffrax.diffeqsolve` (no host round trips), from $\varepsilon$ to $T$.

    *Accuracy.* The result is the density of the model's $p_\varepsilon$ (close to
    $p_0$ for small $\varepsilon$). Two errors remain: the solver's (set by
    `rtol`/`atol`) and the mismatch between the true $p_T$ and the prior, which is
    $\log p_T(x(T)) - \log\mathcal{N}(x(T); 0, s^2 I)$ at the latent; pass the exact
    `prior_logp` to remove the latter when it is known.

    *Divergence.* `trace="exact"` takes the trace of the Jacobian from $D$
    Jacobian–vector products (cost $\approx D$ forward passes per evaluation: for low
    dimension). `trace="hutchinson"` uses the Hutchinson–Skilling estimator
    $\frac1m\sum_j v_j^\top \partial_x\tilde f\, v_j$ with `num_probes` $= m$ probes
    drawn once from `key` and held fixed over the solve: an unbiased estimate of the
    log-likelihood's integral term (its variance falls as $1/m$). Probes are
    `"rademacher"` ($\pm 1$, the lowest variance of i.i.d. probes),
    `"gaussian"`, or `"orthogonal"` (the first $m$ columns of a random orthogonal
    matrix times $\sqrt D$; still $\mathbb{E}[vv^\top] = I$, lower variance than
    i.i.d. probes, and exact at $m = D$).

    *Gradients.* `jax.grad` flows through the solve (with respect to `x` and to any
    arrays inside `score`, e.g. an Equinox model) by the diffrax `adjoint`.
    `diffrax.RecursiveCheckpointAdjoint()` (default) differentiates the solver's own
    steps: gradients exact for the discretised solve, memory $O(\sqrt{n})$ in the
    number of steps $n$ (it checkpoints and recomputes). `diffrax.BacksolveAdjoint()`
    solves the adjoint ODE backwards: memory $O(1)$ in the number of steps, but the
    gradient is only as accurate as that second solve (and the backwards
    reconstruction of $x(t)$); tighten its tolerances when precision matters.

    **Arguments:**

    - `sde`: the forward SDE, e.g. [`sdegen.VPSDE`][].
    - `score`: `score(t, x)` for one example.
    - `x`: one example (any shape).
    - `key`: PRNG key for the Hutchinson probes (required for
      `trace="hutchinson"`, unused for `"exact"`).
    - `solver`: an ODE solver name from [`sdegen.SOLVERS`][] or a diffrax solver.
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `trace`: `"exact"` or `"hutchinson"`.
    - `eps`: starting time $\varepsilon \in (0, T)$.
    - `num_probes`, `probe`: Hutchinson settings (see above).
    - `adjoint`: a diffrax adjoint for gradients (see above).
    - `num_steps`: fixed uniform steps instead of adaptive ones.
    - `dt0`: initial step of an adaptive solve (by default chosen automatically).
    - `max_steps`: cap on the number of steps.
    - `prior_logp`: a callable `z -> scalar` to use instead of `sde.prior_logp`.
    - `throw`: raise if the solve fails (else inspect `stats.result`).

    **Returns:** `(logp, stats)`: the log-likelihood in nats (a scalar) and a
    [`sdegen.LikelihoodStats`][] with `nfe`, `prior_logp`, `delta_logp`, the latent
    `z`, step counts and the result code.

    **Raises:** `ValueError` for an unknown `trace`/`probe`/solver, a missing `key`
    with `trace="hutchinson"`, `eps` outside $(0, T)$, bad tolerances, or a
    non-finite `x`.
    """
    solver_obj, controller = _check_options(
        sde, score, solver, rtol, atol, trace, eps, num_probes, probe, adjoint,
        num_steps, prior_logp,
    )  # fmt: skip
    x = error_if_not_finite(as_float_array(x, "x"), "x")
    if trace == "hutchinson":
        _check_orthogonal(probe, num_probes, x.size)
    probes = _probes_for(key, x, trace, num_probes, probe)
    if num_steps is not None:
        dt0 = (sde.T - eps) / int(num_steps)
    return _solve(sde, score, x, probes, eps, solver_obj, controller, dt0, adjoint,
                  max_steps, throw, trace, prior_logp, False)  # fmt: skip


@eqx.filter_jit
def _chunk(sde, score, xs, idx, key, eps, solver, controller, dt0, adjoint, max_steps,
           throw, trace, prior_logp, num_probes, probe, per_sample_solves):  # fmt: skip
    if trace == "hutchinson":
        keys = jax.vmap(lambda i: jr.fold_in(key, i))(idx)
        draw = lambda k, x: _draw_probes(k, x, num_probes, probe)
        probes = jax.vmap(draw)(keys, xs)
    else:
        probes = None
    if per_sample_solves:
        one = lambda x, p: _solve(
            sde, score, x, p, eps, solver, controller, dt0, adjoint, max_steps, throw,
            trace, prior_logp, False,
        )  # fmt: skip
        return jax.vmap(one, in_axes=(0, None if probes is None else 0))(xs, probes)
    return _solve(sde, score, xs, probes, eps, solver, controller, dt0, adjoint,
                  max_steps, throw, trace, prior_logp, True)  # fmt: skip


def log_likelihood_batch(
    sde: AbstractSDE,
    score: Callable,
    xs: BatchLike,
    key: KeyArray | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    trace: str = "exact",
    eps: RealScalarLike = 1e-5,
    *,
    num_probes: int = 1,
    probe: str = "rademacher",
    adjoint: Any = diffrax.RecursiveCheckpointAdjoint(),
    num_steps: int | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 16**4,
    prior_logp: Callable | None = None,
    throw: bool = True,
    batch_size: int | None = 1024,
    per_sample_solves: bool = True,
    progress: bool = False,
) -> tuple[Float[Array, " batch"], LikelihoodStats]:
    r"""[`sdegen.log_likelihood`][] of every example of a batch, in chunks of
    `batch_size` so that memory stays bounded.

    With `per_sample_solves=True` (default) each example gets its own adaptive solve
    (`jax.vmap` of [`sdegen.log_likelihood`][]): its error is controlled on its own,
    and its result does not depend on the rest of the batch. With
    `per_sample_solves=False` each chunk is one solve of the stacked augmented system
    with shared steps, whose error norm is taken over the whole chunk (as in the
    official score_sde code): cheaper bookkeeping, but a point's accuracy then depends
    on its neighbours.

    Hutchinson probes for example $i$ come from `jax.random.fold_in(key, i)`, so
    results do not depend on `batch_size`. Every chunk has the same shape (the last
    one is padded), so the solve compiles once.

    **Arguments:** as [`sdegen.log_likelihood`][], with `xs` a batch (leading axis),
    plus:

    - `batch_size`: examples per chunk (`None`: the whole batch at once).
    - `per_sample_solves`: see above.
    - `progress`: show a `tqdm` progress bar over chunks.

    **Returns:** `(logp, stats)`: log-likelihoods in nats of shape `(batch,)` and a
    [`sdegen.LikelihoodStats`][] whose fields have a leading batch axis (with
    `per_sample_solves=False`, the step counts are those of the shared solve).
    """
    solver_obj, controller = _check_options(
        sde, score, solver, rtol, atol, trace, eps, num_probes, probe, adjoint,
        num_steps, prior_logp,
    )  # fmt: skip
    xs = as_float_array(xs, "xs")
    if xs.ndim < 1 or xs.shape[0] < 1:
        raise ValueError(
            f"`xs` must be a non-empty batch with a leading batch axis, got shape "
            f"{xs.shape}."
        )
    if is_concrete(xs) and not bool(jnp.all(jnp.isfinite(xs))):
        raise ValueError("`xs` contains non-finite values (NaN or inf).")
    n = xs.shape[0]
    if batch_size is None:
        batch_size = n
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int or None, got {batch_size!r}."
        )
    batch_size = min(int(batch_size), n)
    if trace == "hutchinson":
        _check_orthogonal(probe, num_probes, int(np.prod(xs.shape[1:])))
        if key is None:
            _probes_for(None, xs[0], trace, num_probes, probe)
    if num_steps is not None:
        dt0 = (sde.T - eps) / int(num_steps)

    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="log-likelihood", unit="chunk")
    outs = []
    for start in starts:
        stop = min(start + batch_size, n)
        idx = jnp.arange(start, start + batch_size)
        chunk = xs[start:stop]
        if stop - start < batch_size:
            pad_shape = (batch_size - (stop - start),) + xs.shape[1:]
            pad = jnp.broadcast_to(xs[:1], pad_shape)
            chunk = jnp.concatenate([chunk, pad], axis=0)
        logp, st = _chunk(sde, score, chunk, idx, key, eps, solver_obj, controller,
                          dt0, adjoint, max_steps, throw, trace, prior_logp,
                          int(num_probes), probe, per_sample_solves)  # fmt: skip
        outs.append(jax.tree_util.tree_map(lambda a: a[: stop - start], (logp, st)))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *outs)


# ---------------------------------------------------------------- bits per dimension


def _data_range(data_range) -> tuple[float, float]:
    if isinstance(data_range, str):
        named = {"minus_one_one": (-1.0, 1.0), "zero_one": (0.0, 1.0)}
        if data_range not in named:
            raise ValueError(
                "`data_range` must be 'minus_one_one', 'zero_one' or a pair (low, "
                f"high), got {data_range!r}."
            )
        return named[data_range]
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(
            "`data_range` must be 'minus_one_one', 'zero_one' or a pair (low, high), "
            f"got {data_range!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(
            f"`data_range` must have finite low < high, got {data_range!r}."
        )
    return lo, hi


def _check_num_bins(num_bins) -> int:
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"`num_bins` must be an int >= 2, got {num_bins!r}.")
    return int(num_bins)


def bits_per_dim(
    logp: Float[ArrayLike, "*batch"],
    num_dims: int,
    *,
    data_range: str | tuple[float, float] = "minus_one_one",
    num_bins: int = 256,
) -> Float[Array, "*batch"]:
    r"""Bits per dimension of discrete data (e.g. 8-bit images) from the
    log-density `logp` (nats) of its uniformly dequantised, rescaled version.

    Data $k \in \{0, \dots, K-1\}^D$ ($K$ = `num_bins`) is dequantised to
    $y = k + u$, $u \sim \mathcal{U}[0, 1)^D$, and rescaled to
    $x = \mathrm{low} + a\,y$ with $a = (\mathrm{high} - \mathrm{low}) / K$
    (so $x = (k + u)/128 - 1$ for `"minus_one_one"` and $x = (k + u)/256$ for
    `"zero_one"` with $K = 256$). By the change of variables
    $\log p_y(y) = \log p_x(x) + D\log a$, and

    $$\mathrm{bpd} = -\frac{\log p_y(y)}{D\ln 2} = -\frac{\log p_x(x)}{D\ln 2}
    - \log_2 a,$$

    i.e. $+7$ bits for $[-1, 1]$ and $+8$ for $[0, 1]$ with 256 levels (the offsets
    of the official score_sde code). Averaged over $u$ this is an upper bound on
    $-\log_2 P(k)/D$ of the discrete model $P(k) = \int_{[0,1)^D} p_y(k + u)\,
    \mathrm{d}u$ (Jensen; Theis et al. 2016, "A note on the evaluation of
    generative models"); the gap vanishes as the density becomes flat within a bin.

    **Arguments:**

    - `logp`: $\log p_x(x)$ in nats, e.g. from [`sdegen.log_likelihood`][] (any
      shape: one value per example).
    - `num_dims`: $D$, the number of entries of one example (e.g. $3\cdot32\cdot32$).
    - `data_range`: `"minus_one_one"`, `"zero_one"` or a pair `(low, high)`: the
      interval the $K$ levels were scaled to.
    - `num_bins`: $K$, the number of quantisation levels (256 for 8-bit data).

    **Returns:** bits per dimension, of the shape of `logp`.
    """
    if isinstance(num_dims, bool) or int(num_dims) != num_dims or num_dims < 1:
        raise ValueError(f"`num_dims` must be a positive int, got {num_dims!r}.")
    lo, hi = _data_range(data_range)
    num_bins = _check_num_bins(num_bins)
    logp = as_float_array(logp, "logp")
    log2_a = math.log2((hi - lo) / num_bins)
    return -logp / (int(num_dims) * math.log(2.0)) - log2_a


def dequantize(
    key: KeyArray,
    x: Shaped[ArrayLike, "*data"],
    data_range: str | tuple[float, float] = "minus_one_one",
    *,
    num_bins: int = 256,
    dtype: Any = None,
) -> Data:
    r"""Uniform dequantisation of integer data $k \in \{0, \dots, K-1\}$:
    $x = \mathrm{low} + (k + u)\,(\mathrm{high} - \mathrm{low})/K$ with
    $u \sim \mathcal{U}[0, 1)$ drawn independently for every entry (see
    [`sdegen.bits_per_dim`][]).

    **Arguments:**

    - `key`: PRNG key for $u$.
    - `x`: integer data (e.g. `uint8` pixels), any shape.
    - `data_range`: `"minus_one_one"`, `"zero_one"` or a pair `(low, high)`.
    - `num_bins`: $K$ (256 for 8-bit data).
    - `dtype`: output float dtype (JAX's default float by default).

    **Returns:** floats in $[\mathrm{low}, \mathrm{high})$ of the shape of `x`.

    **Raises:** `ValueError` if `x` is not integer-valued or falls outside
    $\{0, \dots, K-1\}$.
    """
    lo, hi = _data_range(data_range)
    num_bins = _check_num_bins(num_bins)
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool):
        raise ValueError(f"`x` must be integer data (e.g. uint8), got dtype {x.dtype}.")
    if is_concrete(x) and x.size > 0:
        xmin, xmax = int(jnp.min(x)), int(jnp.max(x))
        if xmin < 0 or xmax >= num_bins:
            raise ValueError(
                f"`x` must lie in {{0, ..., {num_bins - 1}}}, got values in "
                f"[{xmin}, {xmax}]."
            )
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    u = jr.uniform(key, x.shape, dtype=dtype)
    return (lo + (x.astype(dtype) + u) * ((hi - lo) / num_bins)).astype(dtype)

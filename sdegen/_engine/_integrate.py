r"""The sampling engine: one fixed-step loop and one adaptive path, for every solver.

- [`fixed_solve`][]: one `solver.step` per interval of a grid inside a `jax.lax.scan`
  (the loop $y_{i+1} = \Phi(y_i; u_i, u_{i+1})$ of the solver's one-step map $\Phi$),
  without the adaptive-stepping machinery, so it costs what a hand-written loop costs.
  Every sampler of sdegen — diffrax's solvers on the reverse SDE or the
  probability-flow ODE, DDIM, DPM-Solver, EDM, ancestral sampling, predictor–corrector
  and projected samplers — is a solver run by this loop. It watches the state: the
  first step that produces NaN or infinity is recorded in the statistics, and so is
  a grid that is not finite and strictly monotone (`RESULTS.invalid_grid`).
- [`adaptive_solve`][]: `diffrax.diffeqsolve` with a PID controller; a solve that
  stalls because the vector field returned NaN is reported as non-finite at the time
  it stalled (instead of as "maximum number of steps reached").

Both return `(y1, ys, stats)` with a [`sdegen.SolveStats`][]: score evaluations, steps
and a result code. The entry points (`sample_sde`, ...) turn a failed result into an
error that names the sampler and the time.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, Int, PyTree

from .._processes._terms import EvalCounter, ScoreDrift
from ._solvers import AbstractWrapper, PredictorCorrector


class RESULTS(diffrax.RESULTS):  # pyright: ignore
    """diffrax's result codes plus sdegen's own."""

    nonfinite_state = (
        "The state became non-finite (NaN or inf): the score or model returned NaN or "
        "inf, or the step was too large."
    )
    invalid_grid = (
        "The time grid is not finite and strictly monotone (a grid made from lambda(t) "
        "= log(alpha/sigma) that the floating dtype cannot represent there)."
    )


def _value_repr(x: Any) -> str:
    try:
        a = jax.device_get(x)
    except Exception:
        return repr(x)
    if hasattr(a, "shape") and a.shape == ():
        return repr(a.item())
    return repr(a)


class _ReprValues(eqx.Module):
    """Statistics print their values (not `i32[]`)."""

    def __repr__(self):
        fields = []
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if hasattr(v, "_enumeration") and hasattr(v, "_value"):
                # a RESULTS item: its message ("successful" for the empty one)
                try:
                    message = v._enumeration[v] if jnp.size(v._value) == 1 else None
                except Exception:  # traced or batched: shown as its values below
                    message = None
                if message is not None:
                    fields.append(f"{name}={message or 'successful'!r}")
                    continue
            fields.append(f"{name}={_value_repr(v)}")
        return f"{type(self).__name__}({', '.join(fields)})"

    __str__ = __repr__


class SolveStats(_ReprValues):
    r"""What a solve did (batched along leading axes when the solve was vmapped).

    - `nfe`: score (or vector-field) evaluations, counted from the solver's own step
      (traced once) times the number of steps taken, accepted and rejected.
    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: as diffrax counts them
      (fixed steps: all accepted).
    - `result`: a [`sdegen.RESULTS`][] code; `RESULTS.successful` when all went well,
      `RESULTS.nonfinite_state` when the state became NaN or infinite,
      `RESULTS.invalid_grid` when a fixed-step grid was not finite and strictly
      monotone (nothing else is then meaningful).
    - `t_failed`: the time at which the solve failed (NaN when it did not), in the
      SDE's time.
    """

    nfe: Int[Array, "*batch"]
    num_steps: Int[Array, "*batch"]
    num_accepted_steps: Int[Array, "*batch"]
    num_rejected_steps: Int[Array, "*batch"]
    result: RESULTS
    t_failed: Float[Array, "*batch"]


def levy_area_for(solver: diffrax.AbstractSolver) -> type:
    """The Brownian increment type a solver needs (Lévy areas for SRK methods)."""
    if isinstance(solver, AbstractWrapper):
        return diffrax.BrownianIncrement if solver.inner is None else levy_area_for(
            solver.inner
        )
    if isinstance(solver, diffrax.AbstractSRK):
        minimal = solver.minimal_levy_area
        if issubclass(diffrax.BrownianIncrement, minimal):
            return diffrax.BrownianIncrement
        if issubclass(diffrax.SpaceTimeLevyArea, minimal):
            return diffrax.SpaceTimeLevyArea
        return diffrax.SpaceTimeTimeLevyArea
    return diffrax.BrownianIncrement


# ---------------------------------------------------------------- counting


def count_evals(solver: diffrax.AbstractSolver, terms: PyTree, u0, u1, y0, args: Any,
                made_jump: bool = False) -> tuple[int, int]:  # fmt: skip
    """`(once, per_step)`: score evaluations of a solve with `solver`: `once` extra
    evaluations (a first-same-as-last solver's first stage) and `per_step` per step.
    Runge–Kutta methods are counted from their tableau, wrappers from their parts, and
    any other solver by counting the calls of the score while one step is traced."""
    if isinstance(solver, PredictorCorrector):
        once, per = (0, 0) if solver.predictor is None else count_evals(
            solver.predictor, terms, u0, u1, y0, args, True)  # fmt: skip
        return once, per + solver.corrector.evals_per_step()
    if isinstance(solver, AbstractWrapper):
        return count_evals(solver.inner, terms, u0, u1, y0, args, made_jump)
    if isinstance(solver, diffrax.AbstractRungeKutta) and isinstance(
        solver.tableau, diffrax.ButcherTableau
    ):
        stages = len(solver.tableau.c) + 1
        _, fsal = solver._common(terms, u0, u1, y0, args)
        return (1, stages - 1) if fsal and not made_jump else (0, stages)
    if isinstance(solver, diffrax.AbstractSRK):
        return 0, len(solver.tableau.b_sol)
    counted, total = _counted(terms)
    state = jax.eval_shape(lambda: solver.init(counted, u0, u1, y0, args))
    n_init = total()
    jax.eval_shape(
        lambda s: solver.step(counted, u0, u1, y0, args, s, made_jump), state
    )
    return n_init, total() - n_init


def _counted(terms: PyTree) -> tuple[PyTree, Callable[[], int]]:
    """`terms` with every score wrapped in an `EvalCounter`, and the calls so far."""
    counters: list[EvalCounter] = []

    def swap(leaf):
        if isinstance(leaf, ScoreDrift):
            c = EvalCounter(leaf.score)
            counters.append(c)
            return eqx.tree_at(lambda d: d.score, leaf, c)
        return leaf

    counted = jtu.tree_map(swap, terms, is_leaf=lambda x: isinstance(x, ScoreDrift))
    return counted, lambda: sum(c.calls for c in counters)


def _counted_by_tableau(solver: diffrax.AbstractSolver) -> bool:
    """Whether `count_evals` reads `solver`'s evaluations without tracing a step."""
    return isinstance(solver, (AbstractWrapper, PredictorCorrector, diffrax.AbstractSRK)) or (
        isinstance(solver, diffrax.AbstractRungeKutta)
        and isinstance(solver.tableau, diffrax.ButcherTableau)
    )


# ---------------------------------------------------------------- fixed steps


def _all(x: Array) -> Array:
    # `lax` itself: `jnp.all` is a small jitted program of its own to trace and lower
    return lax.reduce_and(x, tuple(range(jnp.ndim(x))))


def _all_finite(y: PyTree) -> Array:
    ok = jnp.asarray(True)
    for x in jtu.tree_leaves(y):
        ok = ok & _all(lax.is_finite(x))
    return ok


def grid_is_valid(ts: Array) -> Array:
    """Whether the grid is finite and strictly monotone. The engine checks the grids
    it is given, so a sampler's grid needs no check (and no error branch) of its own
    under `jit`; a grid made from constants folds to `True` when compiled."""
    d = ts[1:] - ts[:-1]
    return _all(lax.is_finite(ts)) & (_all(d > 0) | _all(d < 0))


def fixed_solve(
    terms: PyTree[diffrax.AbstractTerm],
    solver: diffrax.AbstractSolver,
    ts: Float[Array, " times"],
    y0: PyTree[Array],
    *,
    args: PyTree[Any] = None,
    save_trajectory: bool = False,
    time_of: Callable[[Any], Any] = lambda u: u,
    valid_grid: Any = None,
) -> tuple[PyTree[Array], PyTree[Array] | None, SolveStats]:
    r"""Take one `solver.step` per interval of the grid `ts` inside a `jax.lax.scan`.

    This is `diffrax.diffeqsolve` with the steps of `ts` and without the
    adaptive-stepping machinery, so it runs as fast as a hand-written loop and works
    with any diffrax solver (stochastic Runge–Kutta methods included, given a Brownian
    path with the Lévy area they need, e.g. a [`sdegen.GridBrownianPath`][] on `ts`).

    **Arguments:**

    - `terms`: the diffrax terms, e.g. from [`sdegen.reverse_terms`][].
    - `solver`: any `diffrax.AbstractSolver`.
    - `ts`: the grid $u_0, \dots, u_n$, monotone (increasing for SDE terms; ODE terms
      may also run backwards).
    - `y0`: the state at `ts[0]`.
    - `args`: passed to the vector fields.
    - `save_trajectory`: also return every state.
    - `time_of`: maps the integration time to the SDE's time, for `stats.t_failed`.
    - `valid_grid`: whether `ts` is finite and strictly monotone, when the caller has
      checked it already (else checked here).

    **Returns:** `(y1, ys, stats)`: the state at `ts[-1]`; the states at every grid time
    (`y0` first) when `save_trajectory` is set, else `None`; a [`sdegen.SolveStats`][].
    """
    n = ts.shape[0] - 1
    valid = grid_is_valid(ts) if valid_grid is None else valid_grid
    if _counted_by_tableau(solver):
        n_init, n_step = count_evals(solver, terms, ts[0], ts[1], y0, args)
        run, total = terms, lambda: 0
    else:
        # counted while the loop itself is traced (no separate trace of a step)
        run, total = _counted(terms)
    state = solver.init(run, ts[0], ts[1], y0, args)
    calls = [total()]

    def body(carry, inp):
        y, st, bad = carry
        i, u0, u1 = inp
        before = total()
        y1, _, _, st, _ = solver.step(run, u0, u1, y, args, st, False)
        calls.append(total() - before)  # the last trace's count
        bad = lax.select((bad < 0) & ~_all_finite(y1), i, bad)
        return (y1, st, bad), (y1 if save_trajectory else None)

    steps = jnp.arange(n, dtype=jnp.int32)
    bad0 = jnp.asarray(-1, jnp.int32)
    (y1, _, bad), ys = lax.scan(body, (y0, state, bad0), (steps, ts[:-1], ts[1:]))
    if not _counted_by_tableau(solver):
        n_init, n_step = calls[0], calls[-1]
    if save_trajectory:
        ys = jtu.tree_map(lambda a, b: jnp.concatenate([a[None], b], axis=0), y0, ys)
    failed = bad >= 0
    at = lax.dynamic_slice(ts, (lax.max(bad, np.int32(0)),), (1,))
    t_at = time_of(lax.squeeze(at, (0,)))
    t_failed = lax.select(failed, t_at, lax.full_like(t_at, jnp.nan))
    count = jnp.asarray(n, jnp.int32)
    result = RESULTS.where(failed, RESULTS.nonfinite_state, RESULTS.successful)
    stats = SolveStats(
        nfe=jnp.asarray(n_init + n * n_step, jnp.int32),
        num_steps=count,
        num_accepted_steps=count,
        num_rejected_steps=jnp.zeros((), jnp.int32),
        result=RESULTS.where(valid, result, RESULTS.invalid_grid),
        t_failed=jnp.asarray(t_failed, ts.dtype),
    )
    return y1, ys, stats


# ---------------------------------------------------------------- adaptive steps


def rms_norm(y: PyTree) -> Array:
    """diffrax's default error norm: the root mean square over all entries."""
    return optx.rms_norm(y)


def per_sample_rms_norm(y: PyTree) -> Array:
    r"""The error norm of a batched solve with one error control per sample: the
    largest over the leading (batch) axis of each sample's root mean square, so every
    sample meets the tolerance as it would in its own solve."""
    return jnp.max(jax.vmap(optx.rms_norm)(y))


def adaptive_solve(
    terms: PyTree[diffrax.AbstractTerm],
    solver: diffrax.AbstractSolver,
    t0: Any,
    t1: Any,
    y0: PyTree[Array],
    *,
    rtol: Any,
    atol: Any,
    dt0: Any = None,
    args: PyTree[Any] = None,
    save_ts: Array | None = None,
    max_steps: int = 16**4,
    adjoint: diffrax.AbstractAdjoint | None = None,
    norm: Callable[[PyTree], Array] = rms_norm,
    time_of: Callable[[Any], Any] = lambda u: u,
) -> tuple[PyTree[Array], PyTree[Array] | None, SolveStats]:
    r"""`diffrax.diffeqsolve` with a `PIDController(rtol, atol, norm=norm)` from `t0`
    to `t1`, saving at `save_ts` too when given. Never raises: failures are in
    `stats.result`, and a solve that stalls where the vector field is non-finite is
    reported as `RESULTS.nonfinite_state` at that time.

    **Returns:** `(y1, ys, stats)` as [`sdegen.fixed_solve`][].
    """
    saveat = diffrax.SaveAt(t1=True, ts=save_ts)
    kwargs = {} if adjoint is None else {"adjoint": adjoint}
    n_init, n_step = count_evals(solver, terms, t0, t1, y0, args)
    controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
    sol = diffrax.diffeqsolve(terms, solver, t0, t1, dt0, y0, args=args, saveat=saveat,
                              stepsize_controller=controller, max_steps=max_steps,
                              throw=False, **kwargs)  # fmt: skip
    y1 = jtu.tree_map(lambda a: a[-1], sol.ys)
    ys = None if save_ts is None else jtu.tree_map(lambda a: a[:-1], sol.ys)
    t_end = sol.ts[-1]
    failed = sol.result != diffrax.RESULTS.successful
    # Where did it stall? If the vector field is non-finite there or just ahead (where
    # the rejected steps' stages were), say so.
    # (`unvmap_any`: under vmap the branch runs only if some sample failed.)
    vf_bad = lax.cond(eqxi.unvmap_any(failed),
                      lambda: _nonfinite_ahead(terms, t0, t1, t_end, y1, args),
                      lambda: jnp.asarray(False))  # fmt: skip
    nonfinite = failed & (vf_bad | ~_all_finite(y1))
    result = RESULTS.where(nonfinite, RESULTS.nonfinite_state, RESULTS.promote(sol.result))
    num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    stats = SolveStats(
        nfe=jnp.asarray(n_init + num_steps * n_step, jnp.int32),
        num_steps=num_steps,
        num_accepted_steps=jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
        num_rejected_steps=jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
        result=result,
        t_failed=jnp.where(failed, time_of(t_end), jnp.nan).astype(t_end.dtype),
    )
    return y1, ys, stats


def _nonfinite_ahead(terms, t0, t1, t, y, args):
    """Whether the drift is non-finite at `t` or a little further towards `t1`."""
    lo, hi = jnp.minimum(t0, t1), jnp.maximum(t0, t1)
    offsets = jnp.asarray([0.0, 1e-9, 1e-6, 1e-3], jnp.result_type(t))
    probe = jnp.clip(t + offsets * (t1 - t0), lo, hi)
    bad = jax.vmap(lambda s: ~_all_finite(_vector_field(terms, s, y, args)))(probe)
    return jnp.any(bad)


def _vector_field(terms, t, y, args):
    """The drift part of the terms at `(t, y)` (the noise term has no failure of its
    own)."""
    if isinstance(terms, diffrax.MultiTerm):
        terms = terms.terms[0]
    return terms.vf(t, y, args)

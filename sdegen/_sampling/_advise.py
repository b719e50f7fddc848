r"""Which sampler to use: measure every sampler by name on *your* model, at several
budgets of score evaluations (NFE), and recommend the cheapest that reaches a target
sample quality.

Quality is the verdict of [`sdegen.metrics.verdict`][]: the Fréchet distance of the
samples to a large reference set of real data over that of held-out real data at the
same sample count, with its interval (a ratio of 1 is as good as more real data). Every solver runs on the time grid it was designed for
([`ADVISE_GRIDS`][]), with `num_steps = NFE // (calls per step)`.
"""

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import numpy as np

from .._core._checks import check_callable, check_int, check_positive
from .._engine._solver_table import SOLVERS, lookup
from .._processes._sde import check_sde
from ._sample import sample_ode, sample_sde


DEFAULT_SOLVERS = ("euler", "heun", "ddim", "dpmpp_2m", "dpm_solver_2", "dpm_solver_3",
                   "edm", "euler_maruyama", "ancestral", "dpmpp_2m_sde", "edm_sde")  # fmt: skip
"""The samplers `advise` compares by default: every fixed-step sampler of the table
that suits the probability-flow ODE or the reverse SDE, diffrax's first- and
second-order ones included."""

ADVISE_GRIDS = {"ddim": "logsnr", "dpmpp_2m": "logsnr", "dpm_solver_2": "logsnr",
                "dpm_solver_3": "logsnr", "dpmpp_2m_sde": "logsnr", "edm": "karras",
                "edm_sde": "karras", "heun": "karras"}  # fmt: skip
"""The grid each solver is measured on (the one its paper uses; `"uniform"` for the
rest): DPM-Solver's log-SNR grid, EDM's Karras grid."""

QUICK_SOLVERS = ("euler", "ddim", "dpmpp_2m")
QUICK_NFES = (10, 20)
"""`quick=True`: a few samplers (Euler, DDIM, DPM-Solver++(2M)) at two budgets."""


@dataclass
class Advice:
    """The measurements of [`sdegen.advise`][] and its recommendation."""

    rows: list[dict[str, Any]]
    """One row per (solver, NFE): `solver`, `kind` (`"ode"`/`"sde"`), `grid`, `nfe`,
    `num_steps`, `frechet_ratio` and its interval `frechet_ratio_ci`,
    `frechet_distance`, `kid`, `verdict` (words), `within_target` (`True`, `False`, or
    `None`: cannot tell), `std_ratio`, `frac_outside_range` (and `frac_beyond_1.1`),
    `seconds` (sampling time, compilation excluded) and `compile_seconds` (compiling
    the sampler)."""
    target: float
    floor: float
    recommended: dict[str, Any] | None = field(default=None)
    """The row with the fewest score evaluations (then the fastest) whose Fréchet
    ratio is at most `target`, or `None` if no sampler reached it."""
    reference: str = ""
    """What the samples were measured against."""

    def table(self) -> str:
        """The rows as a Markdown table."""
        head = "| solver | kind | grid | NFE | steps | FD / floor (95% interval) | " \
               "KID | std / data | out of range | seconds (+ compiling) |"  # fmt: skip
        lines = [head, "|" + " --- |" * 10]
        for r in self.rows:
            lo, hi = r.get("frechet_ratio_ci") or (float("nan"), float("nan"))
            lines.append(
                f"| `{r['solver']}` | {r['kind']} | {r['grid']} | {r['nfe']} | "
                f"{r['num_steps']} | {r['frechet_ratio']:.3g} ({lo:.2f}-{hi:.2f}) | "
                f"{r.get('kid', float('nan')):.2g} | {r['std_ratio']:.3g} | "
                f"{r['frac_outside_range']:.3g} | {r['seconds']:.2f} "
                f"(+ {r.get('compile_seconds', float('nan')):.1f}) |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        against = f" (against {self.reference})" if self.reference else ""
        if self.recommended is None:
            return (f"No sampler reached a Fréchet ratio of {self.target}x the "
                    f"data-vs-data floor{against}; try more NFE or train "
                    "longer.")  # fmt: skip
        r = self.recommended
        lo, hi = r["frechet_ratio_ci"]
        text = (f"Recommended: solver={r['solver']!r}, grid={r['grid']!r}, "
                f"num_steps={r['num_steps']} ({r['nfe']} score evaluations): Fréchet "
                f"ratio {r['frechet_ratio']:.2f} (95% interval {lo:.2f}-{hi:.2f}; "
                f"target {self.target}x){against}.")  # fmt: skip
        if r.get("within_target") is None:
            text += (f" The interval reaches beyond {self.target}: at "
                     f"{r.get('frechet_n')} samples the noise is larger than the "
                     "difference to the target, so this is the best estimate, not a "
                     "certainty.")  # fmt: skip
        return text


def _eta(t_start: float, done: int, total: int) -> str:
    """`12 s so far, about 1 min 05 s left`: the mean time of a measurement so far
    (compilation, sampling and metrics) times the measurements left."""
    elapsed = time.perf_counter() - t_start
    left = elapsed / done * (total - done)

    def fmt(s: float) -> str:
        s = int(round(s))
        return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"

    return f"{fmt(elapsed)} so far, about {fmt(left)} left"


def _sampler(sde, score, shape, name, num_steps, grid, args):
    row = SOLVERS[name]
    if row.ode:
        return lambda k: sample_ode(k, sde, score, shape, name, num_steps=num_steps,
                                    grid=grid, args=args)  # fmt: skip
    return lambda k: sample_sde(k, sde, score, shape, name, num_steps=num_steps,
                                grid=grid, args=args)  # fmt: skip


def _min_steps(name: str) -> int:
    """The fewest steps solver `name` takes (1, or more for a solver refused on a
    one-step grid, see `check_min_steps`)."""
    from .._engine._solver_table import solver as get_solver
    from .._engine._solvers._base import check_min_steps

    try:
        check_min_steps(get_solver(name), 1)
    except ValueError:
        return 2
    return 1


def advise(
    key: Any,
    sde: Any,
    score: Callable,
    data: Any,
    *,
    solvers: Sequence[str] = DEFAULT_SOLVERS,
    nfes: Sequence[int] = (5, 10, 20, 35, 50, 100),
    num_samples: int = 500,
    target: float = 1.2,
    transform: Callable[[Any], Any] | None = None,
    args: Any = None,
    chunk_size: int = 500,
    progress: bool = False,
    quick: bool = False,
    callback: Callable[[int, int, dict[str, Any]], None] | None = None,
    reference_name: str = "",
) -> Advice:
    r"""Measure every sampler of `solvers` at every budget of `nfes` score evaluations
    on your model, and recommend the cheapest one whose samples come within `target`
    times the data-vs-data floor of the Fréchet distance to `data`.

    **Arguments:**

    - `key`: PRNG key (the same keys for every sampler, so they are compared on the
      same prior draws).
    - `sde`: the forward SDE of the model.
    - `score`: the score model `score(t, x)` (e.g. the EMA model of a run).
    - `data`: real data `(N, *shape)` in the model's space, as many examples as
      there are (the held-out and the training examples): a third at most is the
      floor set of [`sdegen.metrics.verdict`][], the rest its reference.
    - `solvers`: solver names of [`sdegen.SOLVERS`][] (fixed-step ones).
    - `nfes`: the budgets; a solver with $c$ calls per step gets `nfe // c` steps
      (budgets below one step are skipped).
    - `num_samples`: samples per measurement.
    - `target`: the Fréchet ratio to reach.
    - `transform`: a map applied to the samples and the data before measuring (e.g.
      undoing a standardisation), or `None`.
    - `args`: passed to the score.
    - `chunk_size`: samples per vmapped chunk.
    - `progress`: print one line per measurement: how many are done of how many,
      the time so far and the estimated time left, and the measurement's sampling
      and compilation seconds.
    - `quick`: measure only Euler, DDIM and DPM-Solver++(2M) at 10 and 20 score
      evaluations (where `solvers` and `nfes` are left at their defaults).
    - `callback`: `callback(done, total, row)` after each measurement (for a
      progress display).
    - `reference_name`: how to describe `data` in the summary.

    **Returns:** an [`sdegen.Advice`][]: the rows (Fréchet ratio and distance, std
    ratio, out-of-range fraction, `seconds` of sampling and `compile_seconds` of
    compiling the sampler) and the recommendation.
    """
    from ..metrics import sample_report, verdict

    if quick and tuple(solvers) == DEFAULT_SOLVERS:
        solvers = QUICK_SOLVERS
    if quick and tuple(nfes) == (5, 10, 20, 35, 50, 100):
        nfes = QUICK_NFES
    check_sde(sde)
    check_callable("score", score, "score(t, x) -> Array")
    num_samples = check_int("num_samples", num_samples, minimum=2)
    check_positive("target", target)
    chunk_size = check_int("chunk_size", chunk_size)
    for n in solvers:
        lookup("solver", n, arg="solvers")
    nfes = [check_int("nfes", n) for n in nfes]
    data = np.asarray(data)
    shape = data.shape[1:]
    ref = data if transform is None else np.asarray(transform(data))
    keys = jr.split(key, num_samples)
    # The model's weights are an argument of the compiled sampler, not constants
    # folded into it (XLA would spend seconds constant-folding every layer).
    params, static = eqx.partition(score, eqx.is_array)

    @functools.partial(jax.jit, static_argnums=1)
    def fn(params, which, keys):
        run = _sampler(sde, eqx.combine(params, static), shape, *which, args)
        return jax.vmap(run)(keys)

    pca = None
    if np.prod(shape) > 16:
        from ..metrics import PCAFeatures

        flat = ref.reshape(len(ref), -1)
        pca = PCAFeatures.fit(flat, min(16, *flat.shape))
    plan = list(dict.fromkeys((name, nfe // SOLVERS[name].evals_per_step)
                              for name in solvers for nfe in nfes
                              if nfe // SOLVERS[name].evals_per_step
                              >= _min_steps(name)))  # fmt: skip
    rows, floor = [], float("nan")
    t_start = time.perf_counter()
    for name, steps in plan:
        info = SOLVERS[name]
        grid = ADVISE_GRIDS.get(name, "uniform")
        chunks = [keys[i:i + chunk_size] for i in range(0, num_samples, chunk_size)]
        t_compile = time.perf_counter()
        compiled = {c.shape[0]: fn.lower(params, (name, steps, grid), c).compile()
                    for c in chunks}  # fmt: skip
        t0 = time.perf_counter()
        x = np.concatenate([np.asarray(compiled[c.shape[0]](params, c))
                            for c in chunks])  # fmt: skip
        seconds = time.perf_counter() - t0  # sampling only, compilation excluded
        if transform is not None:
            x = np.asarray(transform(x))
        rep = sample_report(x, ref, key=jr.fold_in(key, 1))
        fin = x.reshape(len(x), -1)
        fin = x[np.all(np.isfinite(fin), axis=1)]
        v = (verdict(fin, ref, key=jr.fold_in(key, 2), target=target,
                     features="raw" if pca is None else pca)
             if len(fin) >= 2 else {})  # fmt: skip
        floor = v.get("frechet_floor", floor)
        rows.append({"solver": name, "kind": "ode" if info.ode else "sde",
                     "grid": grid, "nfe": steps * info.evals_per_step,
                     "num_steps": steps,
                     "frechet_ratio": v.get("frechet_ratio", float("inf")),
                     "frechet_ratio_ci": v.get("frechet_ratio_ci"),
                     "frechet_distance": v.get("frechet_distance", float("inf")),
                     "frechet_n": v.get("frechet_n"), "kid": v.get("kid"),
                     "verdict": v.get("verdict", "no finite samples"),
                     "within_target": v.get("within_target", False),
                     "std_ratio": rep["std_ratio"],
                     "frac_outside_range": rep["frac_outside_range"],
                     "frac_beyond_1.1": rep.get("frac_beyond_1.1"),
                     "seconds": seconds,
                     "compile_seconds": t0 - t_compile})  # fmt: skip
        if callback is not None:
            callback(len(rows), len(plan), rows[-1])
        if progress:
            r = rows[-1]
            print(f"advise [{len(rows)}/{len(plan)}, "
                  f"{_eta(t_start, len(rows), len(plan))}]: {name:14s} NFE "
                  f"{r['nfe']:4d}: FD/floor {r['frechet_ratio']:.3g}, {seconds:.1f} s "
                  f"(+ {t0 - t_compile:.1f} s compiling)", flush=True)  # fmt: skip
    if not rows:  # an empty table is not an answer
        raise ValueError(
            f"Nothing was measured: every budget of `nfes` ({', '.join(map(str, nfes))}) "
            "is below the smallest run of every solver of `solvers` ("
            + ", ".join(f"{n}: {_min_steps(n) * SOLVERS[n].evals_per_step} evaluations"
                        for n in solvers)
            + "). Give larger `nfes` or other `solvers`."
        )  # fmt: skip
    good = [r for r in rows if np.isfinite(r["frechet_ratio"]) and
            r["frechet_ratio"] <= target]  # fmt: skip
    best = min(good, key=lambda r: (r["nfe"], r["seconds"])) if good else None
    return Advice(rows, float(target), float(floor), best, reference_name)


"""`sdegen likelihood`: bits/dim of held-out data through the probability-flow ODE,
in chunks with a progress bar; writes `likelihood.json`.

Quantised data (the digits' 17 grey levels, 8-bit images) are dequantised uniformly
within each level's bin and the result is a discrete bits/dim (an upper bound on the
model's discrete negative log-likelihood); other data get the continuous
$-\\log_2 p(x) / D$. For quantised data the bits/dim of three simple models are
printed beside the model's, fitted on the training split and scored on the same
held-out points: uniform over the levels, an independent per-pixel histogram with
add-one smoothing, and a full Gaussian on dequantised data; a warning says when the
model is worse than one of them.
"""

import argparse
import math
import time
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg

from .._runs._checkpoint import atomic_write_json
from ._data import load_data
from ._devices import num_devices, round_up
from ._errors import CLIError, flag_names
from ._progress import chunked_map
from ._report import say
from ._run import load_run, prepare_out


def _levels_of(x: np.ndarray, levels: int) -> np.ndarray:
    """The integer levels of values at -1 + v * 2 / (L - 1)."""
    return np.round((np.asarray(x, np.float64) + 1) * (levels - 1) / 2).astype(np.int64)


def _train_examples(data, max_examples: int = 5000) -> np.ndarray | None:
    train = data.train
    if hasattr(train, "select"):  # a datasets.Dataset
        x, _ = sg.data.to_arrays(train.select(range(min(len(train), max_examples))))
        return np.asarray(x)
    if callable(train):
        return None
    return np.asarray(train[0] if isinstance(train, tuple) else train)[:max_examples]


def baselines(data, held_out: np.ndarray) -> dict[str, float] | None:
    """Bits/dim of the simple models on `held_out` (see the module docstring), or
    `None` for data that are not quantised."""
    from .._likelihood._baselines import baseline_bits_per_dim

    train = _train_examples(data)
    if data.levels is None or train is None or len(train) < 2:
        return None
    return baseline_bits_per_dim(_levels_of(train, data.levels),
                                 _levels_of(held_out, data.levels), data.levels)  # fmt: skip


def _one_logp(sde, score, key, kwargs, inputs):
    # The convention of `sdegen.log_likelihood_many`: probes of example i from
    # fold_in(key, i).
    x, i = inputs
    logp, _ = sg.log_likelihood(sde, score, x, jr.fold_in(key, i), **kwargs)
    return logp


def cmd_likelihood(args: argparse.Namespace) -> dict[str, Any]:
    out = prepare_out(args.out, writer=False)
    mesh = getattr(args, "mesh", None)
    run = load_run(out)
    cfg = run.cfg
    try:
        data = load_data(cfg["data"], int(cfg["train"]["seed"]))
    except (ValueError, OSError) as e:
        raise CLIError(
            f"--out {str(out)!r}: the run's data set cannot be loaded ({e})."
        ) from None
    n = min(args.num_points, len(data.held_out))
    x = np.asarray(data.held_out[:n])
    num_dims = int(np.prod(data.shape))
    trace = args.trace or ("exact" if num_dims <= 16 else "hutchinson")
    levels = data.levels
    if levels is not None:
        # Values v in {0, ..., L-1} sit at -1 + v * 2 / (L-1); dequantise uniformly
        # within each bin of that width, centred on the value.
        step = 2.0 / (levels - 1)
        lo = -1.0 - step / 2
        rng = (lo, lo + levels * step)
        ints = jnp.round((jnp.asarray(x) + 1) / step).astype(jnp.int32)
        x = np.asarray(sg.dequantize(jr.key(args.seed), ints, rng, num_bins=levels,
                                     dtype=jnp.zeros(()).dtype))  # fmt: skip
    # The model's density is that of y = forward(x):
    # log p(x) = log p(y) + log |det dy/dx| (the transform's log-det-Jacobian).
    log_jac = np.zeros(n)
    if run.transform is not None:
        log_jac = np.asarray(run.transform.log_det_jacobian(np.asarray(x, np.float64),
                                                            len(data.shape)))  # fmt: skip
        x = np.asarray(run.to_model(x))
    kwargs = dict(solver=args.solver, rtol=args.rtol, atol=args.atol, trace=trace)
    fn = eqx.Partial(_one_logp, run.sde, run.model, jr.key(args.seed + 1), kwargs)
    t0 = time.perf_counter()
    with flag_names({"solver": "--solver", "rtol": "--rtol", "atol": "--atol"}):
        logp = chunked_map(fn, (x, np.arange(n, dtype=np.int32)),
                           chunk=round_up(args.batch_size, num_devices(mesh)),
                           mesh=mesh, desc="log-likelihood",
                           progress=not args.no_progress)  # fmt: skip
    wall = time.perf_counter() - t0
    logp = np.asarray(logp, np.float64) + log_jac
    if levels is not None:
        bpd = np.asarray(sg.bits_per_dim(jnp.asarray(logp), num_dims, data_range=rng,
                                         num_bins=levels))  # fmt: skip
        what = f"bits/dim ({levels}-level dequantised data)"
    else:
        bpd = -logp / (num_dims * math.log(2.0))
        what = "bits/dim (continuous density, -log2 p / D)"
    mean = float(np.mean(bpd))
    half = float(1.96 * np.std(bpd, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    result = {"num_points": n, "bits_per_dim": mean, "ci95_half_width": half,
              "nll_nats": float(-np.mean(logp)), "trace": trace, **kwargs,
              "wall_time_s": wall, "what": what,
              "num_devices": num_devices(mesh), "step": run.step}  # fmt: skip
    base = baselines(data, np.asarray(data.held_out[:n])) if levels is not None else None
    if base is not None:
        result["baselines_bits_per_dim"] = base
    if sg.is_main_process():
        atomic_write_json(out / "likelihood.json", result)
        print(f"{what}: {mean:.4f} ± {half:.4f} (95% CI over {n} held-out points; "
              f"NLL {-np.mean(logp):.4f} nats)")  # fmt: skip
        if base is not None:
            names = {"uniform": f"uniform over the {levels} levels",
                     "histogram": "per-pixel histogram (add-one smoothing)",
                     "gaussian": "full Gaussian on dequantised data"}  # fmt: skip
            print("baselines (fitted on the training split, scored on the same "
                  "held-out points):")  # fmt: skip
            for k, v in base.items():
                print(f"  {names[k]:42s} {v:.4f}")
            worse = [names[k] for k, v in base.items() if mean > v]
            if worse:
                say(f"warning: the model ({mean:.3f} bits/dim) is worse than the "
                    f"{' and the '.join(worse)}.")  # fmt: skip
    return result

"""sdegen against the PyTorch samplers a user would pick instead: k-diffusion and
diffusers, DPM-Solver++(2M), Euler and Heun, side by side.

The same problem for everyone: an MLP denoiser in EDM's σ parametrisation (Karras et
al. 2022: $D(x, σ) = c_\\text{skip} x + c_\\text{out} F(c_\\text{in} x, \\tfrac14\\log σ)$,
$σ_\\text{data} = 0.5$), with the SAME weights (drawn once with numpy, copied into JAX
and torch), d = 64, float32, the same start $x_T \\sim N(0, σ_\\max^2 I)$ and the same
Karras grid of 20 steps from σ = 80 to 0.002 (ρ = 7, no final step to σ = 0). sdegen
solves the probability-flow ODE of `EDMSDE` on that grid (`"dpmpp_2m"`, `"euler"`, and
`"edm"`, Heun's method); k-diffusion runs `sample_dpmpp_2m`, `sample_euler` and
`sample_heun`; diffusers its EDM schedulers (`EDMDPMSolverMultistepScheduler`,
`EDMEulerScheduler`; it has no EDM Heun scheduler).

One fresh process per framework and round, one after another (never two at once),
rounds interleaved (sdegen, k-diffusion, diffusers, sdegen, ...); torch with 2 threads.
Per cell: the first call in that process (for sdegen: trace + compile + run) and the
median of the timed calls; the outputs are compared with sdegen's (max |difference|).

    python benchmarks/bench_peers.py [--rounds 3] [--reps 7]

Needs the `bench` extra (torch, diffusers, k-diffusion); `available()` says whether
they import. k-diffusion's package `__init__` imports its training stack (torchvision,
scikit-image, clean-fid, wandb, ...), so only its `sampling` module is loaded here,
with the one helper it needs from `k_diffusion.utils`.
"""

import argparse
import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import types

import numpy as np


D, WIDTH, SEED = 64, 256, 0
SIGMA_MIN, SIGMA_MAX, SIGMA_DATA, RHO, STEPS = 0.002, 80.0, 0.5, 7.0, 20
SAMPLERS = ("dpmpp_2m", "euler", "heun")
BATCHES = (64, 1024)
FRAMEWORKS = ("sdegen", "jax-hand", "k-diffusion", "diffusers")
PEERS = ("k-diffusion", "diffusers")


def available() -> bool:
    """Whether torch, diffusers and k-diffusion are installed."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("torch", "diffusers", "k_diffusion", "torchsde", "torchdiffeq"))  # fmt: skip


def weights() -> list[tuple[np.ndarray, np.ndarray]]:
    """The MLP `[c_in x; c_noise] -> 256 -> 256 -> d` (SiLU), float32, fixed seed."""
    rng = np.random.default_rng(SEED)
    sizes = [D + 1, WIDTH, WIDTH, D]
    return [(rng.normal(0, 1 / np.sqrt(a), (b, a)).astype(np.float32),
             rng.normal(0, 0.1, (b,)).astype(np.float32)) for a, b in zip(sizes, sizes[1:])]  # fmt: skip


def karras() -> np.ndarray:
    """The 21 noise levels from σ_max to σ_min (float64, cast by each framework)."""
    ramp = np.linspace(0, 1, STEPS + 1)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    s = (hi + ramp * (lo - hi)) ** RHO
    s[0], s[-1] = SIGMA_MAX, SIGMA_MIN
    return s


def x_init(batch: int) -> np.ndarray:
    return (SIGMA_MAX * np.random.default_rng(batch).normal(size=(batch, D))).astype(
        np.float32
    )


# ---------------------------------------------------------------- the frameworks


def _jax_denoiser():
    """The EDM denoiser D(x, σ) of one example in JAX, with the shared weights."""
    import jax
    import jax.numpy as jnp

    W = [(jnp.asarray(w), jnp.asarray(b)) for w, b in weights()]

    def denoiser(x, sigma):
        s2 = sigma**2 + SIGMA_DATA**2
        h = jnp.concatenate([x / jnp.sqrt(s2), 0.25 * jnp.log(sigma)[None]])
        for i, (w, b) in enumerate(W):
            h = w @ h + b
            h = jax.nn.silu(h) if i < len(W) - 1 else h
        return (SIGMA_DATA**2 / s2) * x + (sigma * SIGMA_DATA / jnp.sqrt(s2)) * h

    return denoiser


def _sdegen_runner():
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import sdegen as sg

    denoiser = _jax_denoiser()
    sde = sg.EDMSDE(T=SIGMA_MAX)
    ts = jnp.asarray(karras(), jnp.float32)
    names = {"dpmpp_2m": "dpmpp_2m", "euler": "euler", "heun": "edm"}

    def score(t, x):
        return (denoiser(x, t) - x) / t**2

    def make(sampler, batch):
        solver = names[sampler]
        fn = jax.jit(jax.vmap(lambda x0: sg.sample_ode(
            jr.key(0), sde, score, (D,), solver, ts=ts, x_init=x0)))  # fmt: skip
        x0 = jnp.asarray(x_init(batch))
        return lambda: np.asarray(fn(x0).block_until_ready())

    return make


def _jax_hand_runner():
    """The floor of XLA itself: the three samplers written by hand in a `lax.scan`
    (k-diffusion's update formulas, in σ) on the same denoiser, vmapped as sdegen's."""
    import jax
    import jax.numpy as jnp

    denoiser = _jax_denoiser()
    sig = jnp.asarray(karras(), jnp.float32)

    def one(sampler, x):
        def body(carry, i):
            x, old = carry
            s0, s1 = sig[i], sig[i + 1]
            den = denoiser(x, s0)
            if sampler == "euler":
                return (x + (x - den) / s0 * (s1 - s0), old), None
            if sampler == "heun":
                d = (x - den) / s0
                x2 = x + d * (s1 - s0)
                d2 = (x2 - denoiser(x2, s1)) / s1
                return (x + 0.5 * (d + d2) * (s1 - s0), old), None
            h = jnp.log(s0) - jnp.log(s1)  # DPM-Solver++(2M), t = -log σ
            h_last = jnp.log(sig[jnp.maximum(i - 1, 0)]) - jnp.log(s0)
            r = h_last / h
            d = jnp.where(i > 0, (1 + 0.5 / r) * den - (0.5 / r) * old, den)
            return ((s1 / s0) * x - jnp.expm1(-h) * d, den), None

        return jax.lax.scan(body, (x, jnp.zeros_like(x)), jnp.arange(STEPS))[0][0]

    def make(sampler, batch):
        fn = jax.jit(jax.vmap(lambda x0: one(sampler, x0)))
        x0 = jnp.asarray(x_init(batch))
        return lambda: np.asarray(fn(x0).block_until_ready())

    return make


def gemm_floor(framework: str, batch: int, reps: int = 7) -> float:
    """Seconds for one (batch x 256) @ (256 x 256) product, the bulk of a denoiser call,
    in JAX (XLA's CPU GEMM) or torch (its BLAS): 50 in a row, median of `reps`."""
    a = np.random.default_rng(0).normal(size=(batch, WIDTH)).astype(np.float32)
    b = np.random.default_rng(1).normal(size=(WIDTH, WIDTH)).astype(np.float32) / 16
    if framework in ("sdegen", "jax-hand"):
        import jax
        import jax.numpy as jnp

        A, B = jnp.asarray(a), jnp.asarray(b)
        f = jax.jit(lambda x: jax.lax.fori_loop(0, 50, lambda i, y: jnp.tanh(y @ B), x))
        run = lambda: f(A).block_until_ready()  # noqa: E731
    else:
        import torch

        A, B = torch.from_numpy(a), torch.from_numpy(b)

        def run():
            y = A
            for _ in range(50):
                y = torch.tanh(y @ B)
            return y

    run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / 50)
    return statistics.median(times)


def _torch_mlp():
    import torch

    torch.set_num_threads(2)
    layers = []
    for w, b in weights():
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers += [lin, torch.nn.SiLU()]
    return torch.nn.Sequential(*layers[:-1]).eval()


def _k_sampling():
    """`k_diffusion.sampling` without the package `__init__` (see the module doc)."""
    import torch

    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    utils = types.ModuleType("k_diffusion.utils")

    def append_dims(x, target_dims):  # k_diffusion.utils.append_dims
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    pkg.utils = utils
    sys.modules.setdefault("k_diffusion", pkg)
    sys.modules.setdefault("k_diffusion.utils", utils)
    from k_diffusion import sampling

    del torch
    return sampling


def _kdiffusion_runner():
    import torch

    sampling = _k_sampling()
    net = _torch_mlp()

    def model(x, sigma):  # the EDM denoiser, sigma of shape (B,)
        s2 = (sigma**2 + SIGMA_DATA**2)[:, None]
        h = torch.cat([x / s2.sqrt(), 0.25 * sigma.log()[:, None]], dim=1)
        return (SIGMA_DATA**2 / s2) * x + (
            sigma[:, None] * SIGMA_DATA / s2.sqrt()
        ) * net(h)

    fns = {"dpmpp_2m": sampling.sample_dpmpp_2m, "euler": sampling.sample_euler,
           "heun": sampling.sample_heun}  # fmt: skip
    sigmas = torch.tensor(karras(), dtype=torch.float32)

    def make(sampler, batch):
        x0 = torch.from_numpy(x_init(batch))

        @torch.no_grad()
        def run():
            return fns[sampler](model, x0, sigmas, disable=True).numpy()

        return run

    return make


def _diffusers_runner():
    import torch
    from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

    net = _torch_mlp()
    grid = karras()
    kw = dict(sigma_min=float(grid[-1]), sigma_max=SIGMA_MAX, sigma_data=SIGMA_DATA,
              rho=RHO, final_sigmas_type="sigma_min")  # fmt: skip

    def make(sampler, batch):
        if sampler == "heun":
            return None  # diffusers has no EDM Heun scheduler
        if sampler == "euler":
            sched = EDMEulerScheduler(**kw)
        else:
            sched = EDMDPMSolverMultistepScheduler(**kw, solver_order=2,
                                                   algorithm_type="dpmsolver++")  # fmt: skip
        x0 = torch.from_numpy(x_init(batch))
        sigmas = torch.tensor(grid, dtype=torch.float32)

        @torch.no_grad()
        def run():
            # reset the scheduler, then put the shared grid in place of its own
            sched.set_timesteps(STEPS)
            sched.sigmas = sigmas
            sched.timesteps = sched.precondition_noise(sigmas[:-1])
            x = x0.clone()
            for t in sched.timesteps:  # t = c_noise(σ) = log(σ) / 4
                inp = sched.scale_model_input(x, t)  # c_in(σ) x
                c = t.expand(x.shape[0])[:, None].to(x.dtype)
                out = net(torch.cat([inp, c], dim=1))
                x = sched.step(out, t, x).prev_sample
            return x.numpy()

        return run

    return make


RUNNERS = {"sdegen": _sdegen_runner, "jax-hand": _jax_hand_runner,
           "k-diffusion": _kdiffusion_runner, "diffusers": _diffusers_runner}  # fmt: skip


def _child(framework: str, reps: int, out_dir: str) -> None:
    """One framework in this process: every cell's first call and timed calls."""
    make = RUNNERS[framework]()
    res = {}
    for sampler in SAMPLERS:
        for batch in BATCHES:
            run = make(sampler, batch)
            if run is None:
                continue
            t0 = time.perf_counter()
            out = run()
            first = time.perf_counter() - t0
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            np.save(os.path.join(out_dir, f"{framework}_{sampler}_{batch}.npy"), out)
            res[f"{sampler}/{batch}"] = {
                "first": first,
                "median": statistics.median(times),
            }
    for batch in BATCHES:
        res[f"gemm/{batch}"] = gemm_floor(framework, batch)
    print(json.dumps(res))


# ---------------------------------------------------------------- the table


def run(rounds: int = 3, reps: int = 7) -> tuple[str, dict]:
    """Interleaved fresh processes; `(markdown, data)`."""
    try:
        from ._common import table
    except ImportError:
        from _common import table
    here = pathlib.Path(__file__).resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(here.parents[1]), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    raw: dict = {f: [] for f in FRAMEWORKS}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for f in FRAMEWORKS:
                proc = subprocess.run([sys.executable, str(here), "--child", f, "--reps",
                                       str(reps), "--out", tmp], capture_output=True,
                                      text=True, env=env, timeout=1200)  # fmt: skip
                if proc.returncode != 0:
                    raise RuntimeError(f"{f}: {proc.stderr[-3000:]}")
                raw[f].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        outs = {p.stem: np.load(p) for p in pathlib.Path(tmp).glob("*.npy")}
    rows, data = [], {"cells": {}, "rounds": rounds, "reps": reps}
    for sampler in SAMPLERS:
        for batch in BATCHES:
            cell = f"{sampler}/{batch}"
            med = {f: statistics.median(r[cell]["median"] for r in raw[f])
                   for f in FRAMEWORKS if cell in raw[f][0]}  # fmt: skip
            first = {
                f: statistics.median(r[cell]["first"] for r in raw[f]) for f in med
            }
            ours = outs[f"sdegen_{sampler}_{batch}"]
            diff = {f: float(np.max(np.abs(outs[f"{f}_{sampler}_{batch}"] - ours)))
                    for f in med if f != "sdegen"}  # fmt: skip
            peers = {f: v for f, v in med.items() if f in PEERS}
            best = min(peers, key=peers.get)
            ratio = med["sdegen"] / peers[best]
            # round by round (each round's processes ran one after another)
            per_round = [r_s[cell]["median"] / min(raw[f][k][cell]["median"] for f in peers)
                         for k, r_s in enumerate(raw["sdegen"])]  # fmt: skip
            vs_hand = med["sdegen"] / med["jax-hand"]
            scale = float(np.max(np.abs(ours)))
            rows.append([sampler, batch, *(f"{1e3 * med[f]:.1f}" if f in med else "—"
                                           for f in FRAMEWORKS),
                         f"{ratio:.2f} ({best}; {min(per_round):.2f}–{max(per_round):.2f})",
                         f"{vs_hand:.2f}",
                         " / ".join(f"{diff[f]:.1e}" if f in diff else "—"
                                    for f in FRAMEWORKS[1:]),
                         " / ".join(f"{1e3 * first[f]:.0f}" if f in first else "—"
                                    for f in FRAMEWORKS)])  # fmt: skip
            data["cells"][cell] = {"median_s": med, "first_s": first, "max_abs_diff": diff,
                                   "ratio_to_fastest_peer": ratio, "fastest_peer": best,
                                   "ratio_per_round": per_round,
                                   "ratio_to_hand_written_jax": vs_hand,
                                   "output_scale": scale}  # fmt: skip
    text = table(["sampler", "batch", "sdegen ms", "hand-written JAX ms", "k-diffusion ms",
                  "diffusers ms", "sdegen / fastest peer (range over rounds)",
                  "sdegen / hand-written JAX",
                  "max abs diff to sdegen (JAX / k-diff / diffusers)",
                  "first call ms (sdegen / JAX / k-diff / diffusers)"], rows)  # fmt: skip
    gemm = {b: {f: statistics.median(r[f"gemm/{b}"] for r in raw[f]) for f in FRAMEWORKS}
            for b in BATCHES}  # fmt: skip
    data["gemm_s"] = gemm
    text += "\n\nThe GEMM underneath: one ({b} x {w}) @ ({w} x {w}) product and tanh, ".format(
        b="batch", w=WIDTH) + "; ".join(
        f"batch {b}: XLA {1e6 * gemm[b]['sdegen']:.0f} µs, torch "
        f"{1e6 * min(gemm[b][f] for f in PEERS):.0f} µs "
        f"(XLA / torch {gemm[b]['sdegen'] / min(gemm[b][f] for f in PEERS):.2f})"
        for b in BATCHES) + "."  # fmt: skip
    text += (f"\n\nd = {D}, MLP {WIDTH}x2, EDM σ parametrisation, Karras grid of {STEPS} "
             "steps (σ 80 → 0.002), float32; torch on CPU with 2 threads. Medians over "
             f"{rounds} fresh processes per framework (interleaved, one at a time) of "
             f"the median of {reps} calls each. Samples have entries up to about "
             f"{max(c['output_scale'] for c in data['cells'].values()):.2g}; sdegen's "
             "Heun is its `edm` sampler; diffusers has no EDM Heun scheduler (—). "
             "\"Hand-written JAX\" is the same update written in a `lax.scan` (the floor "
             "of XLA for this problem).")  # fmt: skip
    return text, data


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--child", choices=FRAMEWORKS)
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.child:
        _child(a.child, a.reps, a.out)
        return
    print(run(a.rounds, a.reps)[0])


if __name__ == "__main__":
    main()

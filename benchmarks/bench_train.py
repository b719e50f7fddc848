"""Training cost: the loss and its gradient, the full step, and the memory of
streamed data.

1. `sdegen.dsm_loss` + gradient against a hand-written JAX DSM loss (the same maths:
   VP SDE, t ~ U(eps, 1), sigma^2 weighting, sum over entries, batch mean), both
   under `jax.jit(jax.value_and_grad)`, on the MLP of the 2-D toy sets, the MLP of
   the digits demo (EDM preconditioning, EDM weighting) and a small U-Net.
2. `sdegen.make_step` (equinox.filter_jit, EMA with warm-up, donation) against a
   minimal hand-written `jax.jit` + optax step on the same model, loss and optimiser
   (donating its parameters, EMA and optimiser state, as `make_step` does).
   Then the loop: `sdegen.train` (the steps between two log records in one compiled
   loop) against the same steps as a Python loop of `make_step` calls and a
   hand-written `jax.lax.scan` of the hand-written step.
3. Peak resident memory of `sdegen.train` on the digits and on a data set 10x the
   digits (at 8x8 and upsampled to 32x32), streamed from a `datasets.Dataset` saved
   to disk (`sdegen.data.DatasetSource`) against the same data stacked into one
   float64 array, each in a fresh process. File-backed RSS is the memory-mapped
   Arrow file (pages the kernel can drop), anonymous RSS the process's own memory.

Timings interleave the contenders (A, B, A, B, ...) in one process, so that load from
other processes hits both alike, and report medians and the ratio of medians.

    python benchmarks/bench_train.py [--batch-size 128] [--calls 20] [--rounds 7]
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import sdegen as sg
from sdegen._training._batches import iterate_batches
from sdegen._training._ema import make_ema


def _copy(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )


def interleave(contenders: dict, rounds: int, cpu: dict | None = None) -> dict:
    """`contenders[name]()` runs one timed block; each is warmed up, then run
    `rounds` times in turn. Returns the median seconds per block of each (and fills
    `cpu`, when given, with the median CPU seconds of this process per block, which a
    shared machine disturbs less than the wall clock)."""
    for f in contenders.values():
        f()
    times = {k: [] for k in contenders}
    cpus = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, f in contenders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            times[k].append(time.perf_counter() - t0)
            cpus[k].append(time.process_time() - c0)
    if cpu is not None:
        cpu.update({k: statistics.median(v) for k, v in cpus.items()})
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- 1. loss + gradient


def hand_dsm(model, sde, weighting, x0, key, eps=1e-5):
    """Hand-written VP DSM: batch draws of t and z, closed-form alpha, sigma."""
    b = x0.shape[0]
    kt, kz = jr.split(key)
    t = jr.uniform(kt, (b,), x0.dtype, eps, sde.T)
    z = jr.normal(kz, x0.shape, x0.dtype)
    integral = sde.beta_min * t + 0.5 * t**2 * (sde.beta_max - sde.beta_min)
    alpha, sigma = jnp.exp(-0.5 * integral), jnp.sqrt(-jnp.expm1(-integral))
    expand = (slice(None),) + (None,) * (x0.ndim - 1)
    xt = alpha[expand] * x0 + sigma[expand] * z
    s = jax.vmap(model)(t, xt)
    sq = jnp.sum(((sigma[expand] * s + z) ** 2).reshape(b, -1), axis=1)
    if weighting == "edm":
        sd2 = model.sigma_data**2
        sq = sq * ((sigma / alpha) ** 2 + sd2) / sd2
    return jnp.mean(sq)


def _loss_cases(batch_size):
    sde = sg.VPSDE()
    digits, _ = sg.data.load_digits()
    flat = digits.reshape(len(digits), -1)
    mlp2 = sg.nn.NoiseParam(sg.nn.MLP(2, 256, 3, key=jr.key(0)), sde)
    mlp64 = sg.nn.EDMPreconditioner(sg.nn.MLP(64, 512, 3, key=jr.key(0)), sde, 0.75)
    unet = sg.nn.NoiseParam(
        sg.nn.UNet(1, key=jr.key(0), base_channels=16, channel_mults=(1, 2),
                   num_groups=8, attention_resolutions=()), sde)  # fmt: skip
    x2 = sg.data.eight_gaussians_sampler(jr.key(1), batch_size)
    return [
        (f"MLP 256x3, 2-D, batch {batch_size}", mlp2, "sigma2", x2),
        (f"digits demo: EDM MLP 512x3, 64-D, batch {batch_size}", mlp64, "edm",
         flat[:batch_size]),
        (f"U-Net (base 16), digits 8x8, batch {batch_size}", unet, "sigma2",
         digits[:batch_size]),
    ]  # fmt: skip


def bench_loss(batch_size, calls, rounds, cases=None):
    rows = []
    sde = sg.VPSDE()
    for name, model, weighting, batch in _loss_cases(batch_size)[:cases]:
        params, static = eqx.partition(model, eqx.is_inexact_array)

        def ours(p, x, k):
            return sg.dsm_loss(eqx.combine(p, static), sde, x, k, weighting=weighting)

        def theirs(p, x, k):
            return hand_dsm(eqx.combine(p, static), sde, weighting, x, k)

        fns = {n: jax.jit(jax.value_and_grad(f)) for n, f in
               (("sdegen", ours), ("hand", theirs))}  # fmt: skip

        def block(f):
            def run():
                out = None
                for i in range(calls):
                    out = f(params, batch, jr.key(i))
                jax.block_until_ready(out)

            return run

        med = interleave({k: block(f) for k, f in fns.items()}, rounds)
        rows.append((name, 1e3 * med["sdegen"] / calls, 1e3 * med["hand"] / calls,
                     med["sdegen"] / med["hand"]))  # fmt: skip
    return rows


# ---------------------------------------------------------------- 2. the whole step


def bench_step(batch_size, calls, rounds, cases=None):
    rows = []
    sde = sg.VPSDE()
    for name, model, weighting, batch in _loss_cases(batch_size)[:cases]:
        loss = lambda m, b, k, w=weighting: sg.dsm_loss(m, sde, b, k, weighting=w)
        cfg = sg.TrainConfig(num_steps=10_000, lr=1e-4, warmup=10, grad_clip=1.0)
        opt = sg.make_optimizer(cfg)
        step = sg.make_step(loss, opt, sg.WarmupEMA(0.999))
        st = {"m": _copy(model), "e": _copy(model),
              "o": opt.init(eqx.filter(model, eqx.is_inexact_array))}  # fmt: skip

        def ours():
            m, e, o = st["m"], st["e"], st["o"]
            for i in range(calls):
                m, e, o, out = step(m, e, o, batch, jr.key(i), step=i)
            jax.block_until_ready(out)
            st.update(m=m, e=e, o=o)

        params, static = eqx.partition(_copy(model), eqx.is_inexact_array)

        # Donating like make_step: a step that allocates new buffers is slower.
        @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
        def hand_step(params, ema, opt_state, batch, key, s):
            f = lambda p: hand_dsm(eqx.combine(p, static), sde, weighting, batch, key)
            value, grads = jax.value_and_grad(f)(params)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            d = jnp.minimum(0.999, (1 + s) / (10 + s))
            ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * p, ema, params)
            return params, ema, opt_state, value

        hs = {"p": params, "e": _copy(params), "o": opt.init(params)}

        def theirs():
            p, e, o = hs["p"], hs["e"], hs["o"]
            for i in range(calls):
                p, e, o, out = hand_step(p, e, o, batch, jr.key(i), jnp.asarray(i))
            jax.block_until_ready(out)
            hs.update(p=p, e=e, o=o)

        cpu: dict = {}
        med = interleave({"sdegen": ours, "hand": theirs}, rounds, cpu)
        rows.append((name, 1e3 * med["sdegen"] / calls, 1e3 * med["hand"] / calls,
                     med["sdegen"] / med["hand"], cpu["sdegen"] / cpu["hand"]))  # fmt: skip
    return rows


# ---------------------------------------------------------------- 2b. the loop


def bench_loop(batch_size, steps, rounds, cases=None):
    """`sdegen.train` (`steps` steps between two log records: one compiled loop)
    against the same steps as a Python loop of `sdegen.make_step` calls (one dispatch
    per step, as `train` ran before) and a hand-written `jax.lax.scan` of the
    hand-written step, all on the same data (drawn in the loop for the 2-D sampler,
    gathered from the array for the digits)."""
    rows = []
    sde = sg.VPSDE()
    cases_ = _loss_cases(batch_size)[:cases]
    digits = jnp.asarray(sg.data.load_digits()[0].reshape(-1, 64))
    data_of = {0: sg.data.eight_gaussians_sampler, 1: digits, 2: sg.data.load_digits()[0]}
    for j, (name, model, weighting, _) in enumerate(cases_):
        data = data_of[j]
        loss = lambda m, b, k, w=weighting: sg.dsm_loss(m, sde, b, k, weighting=w)
        cfg = sg.TrainConfig(num_steps=steps, batch_size=batch_size, lr=1e-4, warmup=10,
                             grad_clip=1.0, log_every=steps, ckpt_every=None)  # fmt: skip
        opt = sg.make_optimizer(cfg)
        ema = make_ema(cfg.ema, cfg.ema_decay, cfg.ema_gamma)  # as sdegen.train's

        def ours():
            state, _ = sg.train(model, loss, data, cfg, progress=False, ema_loss=False)
            jax.block_until_ready(state.model)

        step = sg.make_step(loss, opt, ema)

        def per_step():
            m, e = _copy(model), _copy(model)
            o = opt.init(eqx.filter(m, eqx.is_inexact_array))
            batches = iterate_batches(data, batch_size, cfg.seed)
            for i in range(steps):
                m, e, o, out = step(m, e, o, next(batches), jr.key(i), step=i)
            jax.block_until_ready(out)

        params, static = eqx.partition(model, eqx.is_inexact_array)

        @jax.jit
        def hand_loop(params, key):
            def body(carry, s):
                p, e, o = carry
                k_data, k_loss = jr.split(jr.fold_in(key, s))
                if callable(data):
                    batch = data(k_data, batch_size)
                else:
                    rows = jr.randint(k_data, (batch_size,), 0, data.shape[0])
                    batch = data[rows]
                f = lambda q: hand_dsm(eqx.combine(q, static), sde, weighting, batch, k_loss)
                value, grads = jax.value_and_grad(f)(p)
                updates, o = opt.update(grads, o, p)
                p = optax.apply_updates(p, updates)
                d = jnp.minimum(cfg.ema_decay, (1 + s) / (10 + s))
                e = jax.tree_util.tree_map(lambda a, b: d * a + (1 - d) * b, e, p)
                return (p, e, o), value

            return jax.lax.scan(body, (params, params, opt.init(params)),
                                jnp.arange(steps))  # fmt: skip

        def theirs():
            jax.block_until_ready(hand_loop(params, jr.key(0)))

        med = interleave({"sdegen": ours, "per_step": per_step, "hand": theirs}, rounds)
        rows.append((name, 1e3 * med["sdegen"] / steps, 1e3 * med["per_step"] / steps,
                     1e3 * med["hand"] / steps, med["sdegen"] / med["hand"]))  # fmt: skip
    return rows


# ---------------------------------------------------------------- 3. memory


_MEMORY_CHILD = r"""
import json, sys, time
import numpy as np
import jax.random as jr
import sdegen as sg


def status(field):  # kB -> MiB, from /proc (per process image, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024


mode, path, size, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sde = sg.VPSDE()
model = sg.nn.NoiseParam(sg.nn.MLP(size * size, 128, 2, key=jr.key(0)), sde)
loss = lambda m, b, k: sg.dsm_loss(m, sde, b, k)
cfg = sg.TrainConfig(num_steps=steps, batch_size=128, log_every=steps, ckpt_every=None)
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to now
    f.write("5")
t0 = time.perf_counter()
if mode == "stream":
    import datasets
    data = sg.data.DatasetSource(datasets.load_from_disk(path), "x")
else:
    data = np.load(path)
sg.train(model, loss, data, cfg, progress=False, ema_loss=False)
print(json.dumps({"before_mib": before, "peak_mib": status("VmHWM"),
                  "anon_mib": status("RssAnon"), "file_mib": status("RssFile"),
                  "train_s": time.perf_counter() - t0}))
"""


def _dataset_files(tmp, factor, size):
    """Digits repeated `factor` times (each copy perturbed by noise), upsampled to
    `size` x `size`, saved as a datasets folder (float32) and as a float64 .npy (what
    stacking a data set gives)."""
    import datasets

    x, _ = sg.data.load_digits(dtype=np.float64)
    x = np.asarray(x).reshape(-1, 8, 8)
    if size != 8:
        x = np.repeat(np.repeat(x, size // 8, axis=1), size // 8, axis=2)
    rng = np.random.default_rng(0)
    copies = [x + 0.01 * rng.standard_normal(x.shape) for _ in range(factor)]
    flat = np.concatenate(copies).reshape(-1, size * size)
    npy = os.path.join(tmp, f"data_{size}.npy")
    np.save(npy, flat)
    folder = os.path.join(tmp, f"ds_{size}")
    feats = datasets.Features({"x": datasets.Sequence(datasets.Value("float32"),
                                                      length=size * size)})  # fmt: skip

    def gen():
        for row in flat:
            yield {"x": row.astype(np.float32)}

    datasets.Dataset.from_generator(gen, features=feats).save_to_disk(folder)
    return npy, folder, flat.shape[0], flat.nbytes


def bench_memory(steps, factors=(1, 10), sizes=(8, 32)):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for factor in factors:
                npy, folder, n, nbytes = _dataset_files(tmp, factor, size)
                for mode, path in (("array", npy), ("stream", folder)):
                    out = subprocess.run(
                        [sys.executable, "-c", _MEMORY_CHILD, mode, path, str(size),
                         str(steps)], capture_output=True, text=True, check=True)  # fmt: skip
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    rows.append((f"{factor}x digits: {n} x {size}x{size} "
                                 f"({nbytes / 2**20:.0f} MiB as float64)", mode,
                                 r["before_mib"], r["peak_mib"], r["anon_mib"],
                                 r["file_mib"], r["train_s"]))  # fmt: skip
    return rows


def run(full=False, batch_size=128, calls=20, rounds=None, memory_steps=300,
        skip=()):
    """The four benchmarks as `(markdown, data)`. The default (quick) run skips the
    U-Net, whose compilation alone takes minutes on 2 CPU cores; `full` adds it."""
    rounds = rounds or (7 if full else 5)
    platform = jax.devices()[0].platform
    cases = None if full else 2  # the MLPs only, unless full
    parts, out = [], {}
    if "loss" not in skip:
        rows = bench_loss(batch_size, calls, rounds, cases)
        parts.append(
            f"DSM loss + gradient on {platform}, ms per call (median of {rounds} "
            f"interleaved blocks of {calls} calls)\n\n"
            "| model | sdegen.dsm_loss | hand-written | ratio |\n| --- | --- | --- | --- |\n"
            + "\n".join(f"| {n} | {a:.3f} | {b:.3f} | {r:.3f}x |" for n, a, b, r in rows)
        )  # fmt: skip
        out["loss"] = rows
    if "step" not in skip:
        rows = bench_step(batch_size, calls, rounds, cases)
        parts.append(
            f"Training step on {platform}, ms per step (median of {rounds} interleaved "
            f"blocks of {calls} steps)\n\n"
            "| model | sdegen make_step | hand-written jit + optax | ratio | "
            "CPU-time ratio |\n| --- | --- | --- | --- | --- |\n"
            + "\n".join(f"| {n} | {a:.3f} | {b:.3f} | {r:.3f}x | {c:.3f}x |"
                        for n, a, b, r, c in rows)
        )  # fmt: skip
        out["step"] = rows
    if "loop" not in skip:
        steps = 10 * calls
        rows = bench_loop(batch_size, steps, rounds, cases)
        parts.append(
            f"Training loop on {platform}, ms per step (median of {rounds} interleaved "
            f"runs of {steps} steps, compiled before)\n\n"
            "| model | sdegen.train | make_step per step | hand-written lax.scan | "
            "ratio train / scan |\n| --- | --- | --- | --- | --- |\n"
            + "\n".join(f"| {n} | {a:.3f} | {b:.3f} | {c:.3f} | {r:.3f}x |"
                        for n, a, b, c, r in rows)
        )  # fmt: skip
        out["loop"] = rows
    if "memory" not in skip:
        rows = bench_memory(memory_steps, sizes=(8, 32) if full else (8,))
        parts.append(
            f"Peak resident memory of sdegen.train ({memory_steps} steps of batch 128), "
            "fresh process each\n\n"
            "| data | source | RSS before (MiB) | peak RSS (MiB) | growth | anon / "
            "file-backed RSS at the end (MiB) | time (s) |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n"
            + "\n".join(f"| {n} | {m} | {b:.0f} | {p:.0f} | {p - b:.0f} | {a:.0f} / "
                        f"{f:.0f} | {t:.1f} |" for n, m, b, p, a, f, t in rows)
        )  # fmt: skip
        out["memory"] = rows
    return "\n\n".join(parts), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the U-Net, 32x32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--calls", type=int, default=20, help="calls per timed block")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--memory-steps", type=int, default=300)
    parser.add_argument("--skip", default="", help="comma list of loss,step,loop,memory")
    args = parser.parse_args(argv)
    text, out = run(args.full, args.batch_size, args.calls, args.rounds,
                    args.memory_steps, set(filter(None, args.skip.split(","))))  # fmt: skip
    print(text)
    return out


if __name__ == "__main__":
    main()

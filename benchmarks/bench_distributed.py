"""Data parallelism with jax.sharding: training steps/s and sampling samples/s against
the number of devices.

For each device count d (default 1, 2, 4), a subprocess is started with
`XLA_FLAGS=--xla_force_host_platform_device_count=d JAX_PLATFORMS=cpu` (the device
count is fixed when JAX starts) and measures, in the same process:

- training: `sdegen.sharded_step(sdegen.make_step(dsm_loss, adam), make_mesh(d))`
  against the baseline, the plain `sdegen.make_step` on one device, same global
  batch;
- sampling: `sdegen.sample_many(key, n, sampler, mesh=make_mesh(d))` against the
  baseline, one `jax.jit(jax.vmap(sampler))` over all n keys on one device.

Forced host devices share the machine's CPU cores, so on a 2-core machine expect no
speed-up: the table checks that sharding costs little and that the numbers have the
right shape. `--accelerator` instead measures in this process on the real default
backend (e.g. one GPU) with the devices it has.

    python benchmarks/bench_distributed.py [--devices 1 2 4] [--batch 256]
        [--train-steps 10] [--samples 2048] [--chunk 512] [--sample-steps 50]
        [--width 128] [--repeats 3] [--accelerator]
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=256, help="global training batch")
    p.add_argument("--train-steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=512, help="sample_many chunk size")
    p.add_argument("--sample-steps", type=int, default=50, help="Euler-Maruyama steps")
    p.add_argument("--width", type=int, default=128, help="MLP width")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--accelerator", action="store_true",
                   help="measure on the default backend in this process")  # fmt: skip
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def _measure(args) -> dict:
    """Run in a process whose device count is already set."""
    import statistics

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    import sdegen as sg

    d = jax.device_count() if args.accelerator else args.devices[0]
    if jax.device_count() < d:
        raise SystemExit(f"asked for {d} devices, JAX sees {jax.device_count()}")
    mesh = sg.make_mesh(d)
    sde = sg.VPSDE()
    net = sg.nn.MLP(2, args.width, 3, key=jr.key(0))
    model = sg.nn.NoiseParam(net, sde)
    cfg = sg.TrainConfig(lr=1e-3, warmup=0, ema_decay=0.999)
    opt = sg.make_optimizer(cfg)
    loss_fn = lambda m, x, k: sg.dsm_loss(m, sde, x, k)
    data = sg.data.eight_gaussians().sample(jr.key(1), args.batch)

    def block(tree):
        jax.tree_util.tree_map(
            lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a,
            tree,
        )

    def copy(tree):
        return jax.tree_util.tree_map(
            lambda a: jnp.array(a, copy=True) if eqx.is_array(a) else a, tree
        )

    def steps_per_s(step, place):
        m, e = copy(model), copy(model)
        o = opt.init(eqx.filter(m, eqx.is_inexact_array))
        m, e, o = place((m, e, o))
        m, e, o, loss = step(m, e, o, data, jr.key(0))  # compile
        block(loss)
        rates = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            for s in range(args.train_steps):
                m, e, o, loss = step(m, e, o, data, jr.fold_in(jr.key(r), s))
            block((m, loss))
            rates.append(args.train_steps / (time.perf_counter() - t0))
        return statistics.median(rates)

    plain = sg.make_step(loss_fn, opt, cfg.ema_decay)
    train_base = steps_per_s(plain, lambda t: t)
    train_shard = steps_per_s(sg.sharded_step(plain, mesh),
                              lambda t: sg.replicate(t, mesh))  # fmt: skip

    sampler = eqx.Partial(
        lambda mdl, k: sg.sample_sde(k, sde, mdl, (2,), "euler_maruyama",
                                     num_steps=args.sample_steps),
        model,
    )  # fmt: skip
    n = args.samples
    base_fn = eqx.filter_jit(lambda f, ks: jax.vmap(f)(ks))
    keys = jr.split(jr.key(2), n)
    block(base_fn(sampler, keys))
    chunk = max(d, args.chunk - args.chunk % d)

    def run_many():
        return sg.sample_many(jr.key(2), n, sampler, chunk_size=chunk, mesh=mesh)

    run_many()  # compile
    base_t, many_t = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        block(base_fn(sampler, keys))
        base_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_many()
        many_t.append(time.perf_counter() - t0)
    return {
        "devices": d,
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "train_sharded": train_shard,
        "train_base": train_base,
        "sample_sharded": n / statistics.median(many_t),
        "sample_base": n / statistics.median(base_t),
        "chunk": chunk,
    }


def _run_worker(d: int, args) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={d}"
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--devices", str(d),
           "--batch", str(args.batch), "--train-steps", str(args.train_steps),
           "--samples", str(args.samples), "--chunk", str(args.chunk),
           "--sample-steps", str(args.sample_steps), "--width", str(args.width),
           "--repeats", str(args.repeats)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker for {d} devices failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _table(rows: list[dict], args) -> str:
    head = ["devices", "platform", "train steps/s (sharded)",
            "train steps/s (1-device baseline)", "ratio",
            "samples/s (sample_many, sharded)", "samples/s (1-device vmap baseline)",
            "ratio"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['devices']} | {r['platform']} ({r['device_kind']}) | "
            f"{r['train_sharded']:.1f} | {r['train_base']:.1f} | "
            f"{r['train_sharded'] / r['train_base']:.2f} | "
            f"{r['sample_sharded']:.0f} | {r['sample_base']:.0f} | "
            f"{r['sample_sharded'] / r['sample_base']:.2f} |"
        )
    lines.append("")
    lines.append(
        f"Training: MLP width {args.width}, depth 3, DSM loss, Adam, global batch "
        f"{args.batch}, median over {args.repeats} runs of {args.train_steps} steps. "
        f"Sampling: {args.samples} Euler-Maruyama samples of {args.sample_steps} "
        f"steps, sample_many chunk {args.chunk} (rounded to a multiple of the "
        "devices). Ratios > 1 mean the sharded version is faster than the baseline "
        "measured in the same process."
    )
    return "\n".join(lines)


def main(argv=None) -> str:
    args = _parser().parse_args(argv)
    if args.worker or args.accelerator:
        res = _measure(args)
        if args.worker:
            print("RESULT " + json.dumps(res), flush=True)
            return ""
        rows = [res]
    else:
        rows = [_run_worker(d, args) for d in args.devices]
    out = _table(rows, args)
    print(out, flush=True)
    return out


if __name__ == "__main__":
    main()

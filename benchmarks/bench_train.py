"""Training throughput: sdegen's `make_step` (equinox.filter_jit, EMA, donation)
against a minimal hand-written `jax.jit` + optax step on the same model, loss, batch
and optimiser, measured in the same run.

Models: an MLP on 2-D data and the U-Net on the 8x8 digits, batch 128 by default.
Reported: median steps/s over several timed blocks after compilation.

    python benchmarks/bench_train.py [--batch-size 128] [--steps 50] [--repeats 5]
"""

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax

import sdegen as sg


def _copy(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )


def _time(run_block, steps, repeats):
    run_block(steps)  # compile and warm up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_block(steps)
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_sdegen(model, loss_fn, batch, steps, repeats):
    cfg = sg.TrainConfig(lr=1e-4, warmup=10, grad_clip=1.0, ema_decay=0.999)
    opt = sg.make_optimizer(cfg)
    step = sg.make_step(loss_fn, opt, cfg.ema_decay)
    state = {"m": _copy(model), "e": _copy(model),
             "o": opt.init(eqx.filter(model, eqx.is_inexact_array))}  # fmt: skip
    key = jr.key(0)

    def block(n):
        m, e, o = state["m"], state["e"], state["o"]
        for i in range(n):
            m, e, o, loss = step(m, e, o, batch, jr.fold_in(key, i))
        loss.block_until_ready()
        state.update(m=m, e=e, o=o)

    return _time(block, steps, repeats)


def bench_baseline(model, loss_fn, batch, steps, repeats):
    """The minimal step: split the model once into arrays and static structure, one
    `jax.jit` over (params, ema, opt_state, batch, key), same optax chain, same EMA."""
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adam(optax.linear_schedule(0.0, 1e-4, 10)))  # fmt: skip
    params, static = eqx.partition(_copy(model), eqx.is_inexact_array)
    ema = _copy(params)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, ema, opt_state, batch, key):
        def f(p):
            return loss_fn(eqx.combine(p, static), batch, key)

        loss, grads = jax.value_and_grad(f)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree_util.tree_map(lambda e, p: 0.999 * e + 0.001 * p, ema, params)
        return params, ema, opt_state, loss

    state = {"p": params, "e": ema, "o": opt_state}
    key = jr.key(0)

    def block(n):
        p, e, o = state["p"], state["e"], state["o"]
        for i in range(n):
            p, e, o, loss = step(p, e, o, batch, jr.fold_in(key, i))
        loss.block_until_ready()
        state.update(p=p, e=e, o=o)

    return _time(block, steps, repeats)


def _cases(batch_size, unet_width):
    sde = sg.VPSDE()
    loss = lambda m, b, k: sg.dsm_loss(m, sde, b, k)
    mlp = sg.nn.NoiseParam(sg.nn.MLP(2, 256, 3, key=jr.key(0)), sde)
    x2 = sg.data.eight_gaussians_sampler(jr.key(1), batch_size)
    digits, _ = sg.data.load_digits()
    unet = sg.nn.NoiseParam(
        sg.nn.UNet(1, key=jr.key(0), base_channels=unet_width, channel_mults=(1, 2),
                   num_groups=8, attention_resolutions=()),
        sde,
    )  # fmt: skip
    return [
        (f"MLP 256x3, 2-D, batch {batch_size}", mlp, loss, x2),
        (f"U-Net (base {unet_width}), digits 8x8, batch {batch_size}", unet, loss,
         digits[:batch_size]),
    ]  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks")
    parser.add_argument("--unet-width", type=int, default=16)
    args = parser.parse_args(argv)
    rows = []
    for name, model, loss, batch in _cases(args.batch_size, args.unet_width):
        ours = bench_sdegen(model, loss, batch, args.steps, args.repeats)
        base = bench_baseline(model, loss, batch, args.steps, args.repeats)
        rows.append((name, ours, base, base / ours))
    print(f"Training steps/s on {jax.devices()[0].platform} (median of "
          f"{args.repeats} blocks of {args.steps} steps, after compilation)\n")  # fmt: skip
    print("| model | sdegen make_step | hand-written jax.jit + optax | time ratio |")
    print("| --- | --- | --- | --- |")
    for name, ours, base, ratio in rows:
        print(f"| {name} | {ours:.1f} | {base:.1f} | {ratio:.2f}x |")
    return rows


if __name__ == "__main__":
    main()

"""Flow matching: sdegen's CFM against hand-written JAX and against torchcfm.

1. `sdegen.cfm_loss` + gradient (RectifiedFlow, `sdegen.nn.VelocityParam` around the
   MLP of the 2-D toy sets, batch 256) against a hand-written JAX CFM loss on the same
   network (x_t = (1 - t) x0 + t eps, target eps - x0, sum over entries, batch mean),
   both under `jax.jit(jax.value_and_grad)`, interleaved.
2. The cost of the couplings: one full training step (loss, gradient, Adam) at batch
   256 with `coupling="independent"`, `"ot"` (exact assignment, scipy through
   `jax.pure_callback`) and `"sb"`, and the exact assignment alone with scipy and with
   ott-jax's pure-JAX Hungarian algorithm, interleaved.
3. Eight Gaussians, trained one after the other with the same MLP width (128, three
   hidden layers), steps, batch and Adam learning rate: sdegen (`sdegen.train`,
   constant learning rate, no clipping; sampled with `sdegen.sample_ode`, Euler on a
   uniform grid from T to 0) and torchcfm (`ConditionalFlowMatcher` and
   `ExactOptimalTransportConditionalFlowMatcher` with sigma = 0, its `MLP`, a plain
   Euler loop from noise to data), each with the independent and the OT coupling.
   Quality: sliced W2 of 2000 samples against 2000 fresh data points, next to the
   data-vs-data floor (mean and spread over 5 pairs of fresh data sets), at 1 to 100
   Euler steps. Section 3's torchcfm rows need the `bench` extra (torch) plus
   torchcfm and POT; without them they print "not installed".

    python benchmarks/bench_flow_peers.py [--steps 3000] [--rounds 7] [--skip-quality]
"""

import argparse
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import sdegen as sg
from sdegen._training._losses._couplings import ot_pairs


sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import interleave, ratio, table  # noqa: E402


SDE = sg.RectifiedFlow()
MIX = sg.data.eight_gaussians()
WIDTH, DEPTH, BATCH, LR = 128, 3, 256, 1e-3
NFES = (1, 2, 4, 8, 16, 100)


def _model(key):
    return sg.nn.VelocityParam(sg.nn.MLP(2, WIDTH, DEPTH, key=key), SDE)


def _hand_loss(model, batch, key):
    """CFM by hand: the network's output is the velocity (VelocityParam's raw net)."""
    net = model.net
    kt, kz = jr.split(key)
    t = jr.uniform(kt, (batch.shape[0],), batch.dtype, 1e-5, 1.0)
    z = jr.normal(kz, batch.shape, batch.dtype)
    xt = (1 - t)[:, None] * batch + t[:, None] * z
    v = jax.vmap(net)(t, xt)
    return jnp.mean(jnp.sum((v - (z - batch)) ** 2, axis=-1))


def loss_section(rounds):
    model = _model(jr.key(0))
    batch = MIX.sample(jr.key(1), BATCH)
    key = jr.key(2)
    ours = jax.jit(jax.value_and_grad(lambda m, b, k: sg.cfm_loss(m, SDE, b, k)))
    hand = jax.jit(jax.value_and_grad(_hand_loss))
    calls = 20

    def run(f):
        def thunk():
            out = None
            for i in range(calls):
                out = f(model, batch, jr.fold_in(key, i))
            return out
        return thunk

    res = interleave({"sdegen.cfm_loss": run(ours), "hand-written": run(hand)}, rounds)
    rows = [[k, 1e3 * v["median"] / calls, 1e3 * v["min"] / calls] for k, v in res.items()]
    print("### CFM loss + gradient (batch 256, MLP 128x3)\n")
    print(table(["loss", "ms/call (median)", "ms/call (min)"], rows))
    print(f"\nratio sdegen / hand-written: {ratio(res, 'sdegen.cfm_loss', 'hand-written'):.3f}\n")


def coupling_section(rounds):
    opt = optax.adam(LR)
    model = _model(jr.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state0 = opt.init(params)
    batch = MIX.sample(jr.key(1), BATCH)

    def step_fn(coupling):
        @jax.jit
        def step(p, s, b, k):
            def loss(p):
                return sg.cfm_loss(eqx.combine(p, static), SDE, b, k, coupling=coupling)
            val, g = jax.value_and_grad(loss)(p)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s, val
        return step

    calls = 10

    def run(f):
        def thunk():
            p, s = params, state0
            for i in range(calls):
                p, s, v = f(p, s, batch, jr.key(i))
            return v
        return thunk

    y = jr.normal(jr.key(3), batch.shape)
    f_scipy = jax.jit(lambda a, b: ot_pairs(a, b, solver="scipy"))
    f_ott = jax.jit(lambda a, b: ot_pairs(a, b, solver="ott"))
    res = interleave({
        "step, independent": run(step_fn("independent")),
        "step, ot": run(step_fn("ot")),
        "step, sb (sigma_min=1)": run(step_fn("sb")),
        "assignment alone, scipy": run(lambda p, s, b, k: (p, s, f_scipy(b, y))),
        "assignment alone, ott Hungarian": run(lambda p, s, b, k: (p, s, f_ott(b, y))),
    }, rounds)  # fmt: skip
    base = res["step, independent"]["median"]
    rows = [[k, 1e3 * v["median"] / calls, v["median"] / base] for k, v in res.items()]
    print("### Couplings: cost per training step at batch 256 (2-D data)\n")
    print(table(["what", "ms/step (median)", "x independent step"], rows))
    print()


def _sw(x, y, key):
    return float(sg.metrics.sliced_wasserstein(key, jnp.asarray(x), jnp.asarray(y)))


def _floor(n):
    vals = [_sw(MIX.sample(jr.key(100 + i), n), MIX.sample(jr.key(200 + i), n),
                jr.key(300 + i)) for i in range(5)]  # fmt: skip
    return float(np.mean(vals)), float(np.std(vals))


def _train_sdegen(coupling, steps, data):
    cfg = sg.TrainConfig(num_steps=steps, batch_size=BATCH, lr=LR, warmup=0,
                         schedule="constant", grad_clip=None, log_every=500,
                         ckpt_every=None, seed=0)  # fmt: skip

    def loss_fn(m, b, k):
        return sg.cfm_loss(m, SDE, b, k, coupling=coupling)

    t0 = time.perf_counter()
    state, _ = sg.train(_model(jr.key(0)), loss_fn, data, cfg, progress=False,
                        ema_loss=False)  # fmt: skip
    return state.model, time.perf_counter() - t0


@eqx.filter_jit
def _draw(model, keys, ts):  # the model an argument, not a constant to fold
    return jax.vmap(lambda k: sg.sample_ode(k, SDE, model, (2,), "euler", ts=ts))(keys)


def _sample_sdegen(model, n, nfe):
    ts = jnp.linspace(SDE.T, 0.0, nfe + 1).at[-1].set(1e-5)  # grids lie in (0, T]
    return np.asarray(_draw(model, jr.split(jr.key(7), n), ts))


def _torch_rows(steps, data, n, floor):
    try:
        import torch
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
        from torchcfm.models.models import MLP
    except ImportError as e:
        return [[f"torchcfm ({e.name} not installed)"] + ["-"] * (len(NFES) + 1)]
    torch.manual_seed(0)
    torch.set_num_threads(2)
    rows = []
    for name, fm in (("independent", ConditionalFlowMatcher(sigma=0.0)),
                     ("ot", ExactOptimalTransportConditionalFlowMatcher(sigma=0.0))):  # fmt: skip
        net = MLP(dim=2, w=WIDTH, time_varying=True)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(steps):
            x1 = torch.as_tensor(data[rng.integers(0, len(data), BATCH)], dtype=torch.float32)
            x0 = torch.randn_like(x1)
            t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
            vt = net(torch.cat([xt, t[:, None]], dim=-1))
            loss = torch.mean((vt - ut) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        wall = time.perf_counter() - t0
        sws = []
        with torch.no_grad():
            for nfe in NFES:
                x = torch.randn(n, 2, generator=torch.Generator().manual_seed(7))
                for k in range(nfe):
                    t = torch.full((n, 1), k / nfe)
                    x = x + net(torch.cat([x, t], dim=-1)) / nfe
                sws.append(_sw(x.numpy(), MIX.sample(jr.key(9), n), jr.key(10)))
        rows.append([f"torchcfm, {name}", wall] + sws)
        print("row:", rows[-1], flush=True)
    return rows


def quality_section(steps):
    n = 2000
    data = np.asarray(MIX.sample(jr.key(1), 20000), np.float32)
    floor, spread = _floor(n)
    print(f"floor: {floor:.4f} ± {spread:.4f}", flush=True)
    rows = []
    for coupling in ("independent", "ot"):
        model, wall = _train_sdegen(coupling, steps, data)
        sws = [_sw(_sample_sdegen(model, n, nfe), MIX.sample(jr.key(9), n), jr.key(10))
               for nfe in NFES]  # fmt: skip
        rows.append([f"sdegen, {coupling}", wall] + sws)
        print("row:", rows[-1], flush=True)
    rows += _torch_rows(steps, data, n, floor)
    print(f"### Eight Gaussians: sliced W2 vs Euler steps ({steps} steps of {BATCH}, "
          f"MLP {WIDTH}x3, Adam {LR})\n")
    print(table(["trained with", "train s"] + [f"{k} steps" for k in NFES], rows))
    print(f"\ndata-vs-data floor: {floor:.4f} ± {spread:.4f} (mean ± std over 5 pairs "
          f"of {n} points)\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--only-quality", action="store_true")
    a = p.parse_args()
    if not a.only_quality:
        loss_section(a.rounds)
        coupling_section(a.rounds)
    if not a.skip_quality:
        quality_section(a.steps)


if __name__ == "__main__":
    main()

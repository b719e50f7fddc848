"""Image-scale work on an accelerator: U-Net training throughput, sampling throughput
and peak memory, and a likelihood in bits per dimension.

`run(small=False)` (what `python benchmarks/run.py --device gpu` calls on a machine
with a GPU) uses 32 x 32 x 3 images:

- training: `sdegen.make_step` on `sdegen.dsm_loss` with a `sdegen.nn.UNet`
  (`NoiseParam`, VP SDE), batch 128, images per second in float32 and in bfloat16
  (parameters, data and arithmetic in bfloat16);
- sampling: `jax.vmap` of `sdegen.sample_ode(..., "dpmpp_2m", num_steps=20)`, images
  per second and the device's peak memory (`memory_stats()["peak_bytes_in_use"]`);
- likelihood: `sdegen.log_likelihood` (Hutchinson trace, fixed 20-step grid with
  `heun`) of dequantised random 8-bit images, as `sdegen.bits_per_dim` (an untrained
  network, so only the time and that the number is finite mean anything).

`run(small=True)` is the same code on 4 x 4 x 3 images, batch 4, two steps: what the
test suite runs on the CPU, so the GPU path stays working where no GPU is available.
"""

import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import sdegen as sg


def _sizes(small: bool) -> dict:
    if small:  # the same code at a size that compiles in seconds on a CPU
        return dict(hw=4, batch=4, base=8, mults=(1,), steps=2, sample_batch=2,
                    sample_steps=2, rounds=1, lik_batch=2, lik_steps=2, attention=())  # fmt: skip
    return dict(hw=32, batch=128, base=64, mults=(1, 2, 2), steps=20, sample_batch=256,
                sample_steps=20, rounds=5, lik_batch=16, lik_steps=20, attention=(2,))  # fmt: skip


def _median_time(fn, rounds: int) -> float:
    jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_bytes() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def _model(sz: dict, dtype) -> tuple:
    sde = sg.VPSDE()
    net = sg.nn.UNet(3, key=jr.key(0), base_channels=sz["base"], channel_mults=sz["mults"],
                     attention_resolutions=sz["attention"])  # fmt: skip
    net = jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, net
    )
    return sde, sg.nn.NoiseParam(net, sde)


def bench_train(sz: dict, dtype) -> float:
    """Training images per second."""
    sde, model = _model(sz, dtype)
    opt = sg.make_optimizer(sg.TrainConfig(num_steps=1000, lr=1e-4, warmup=10))
    step = sg.make_step(lambda m, b, k: sg.dsm_loss(m, sde, b, k), opt, 0.999)
    shape = (sz["batch"], 3, sz["hw"], sz["hw"])
    batch = jr.uniform(jr.key(1), shape, dtype, -1.0, 1.0)
    ema = jax.tree_util.tree_map(lambda a: jnp.copy(a) if eqx.is_array(a) else a, model)
    state = {
        "m": model,
        "e": ema,
        "o": opt.init(eqx.filter(model, eqx.is_inexact_array)),
    }

    def block():
        m, e, o = state["m"], state["e"], state["o"]
        for i in range(sz["steps"]):
            m, e, o, loss = step(m, e, o, batch, jr.key(i))
        state.update(m=m, e=e, o=o)
        return loss

    return sz["steps"] * sz["batch"] / _median_time(block, sz["rounds"])


def bench_sample(sz: dict) -> tuple[float, int | None]:
    """Sampling images per second (DPM-Solver++(2M), 20 steps) and peak bytes."""
    sde, model = _model(sz, jnp.float32)
    shape = (3, sz["hw"], sz["hw"])
    fn = jax.jit(jax.vmap(lambda k: sg.sample_ode(k, sde, model, shape, "dpmpp_2m",
                                                  num_steps=sz["sample_steps"])))  # fmt: skip
    keys = jr.split(jr.key(2), sz["sample_batch"])
    t = _median_time(lambda: fn(keys), sz["rounds"])
    return sz["sample_batch"] / t, _peak_bytes()


def bench_likelihood(sz: dict) -> tuple[float, float]:
    """`(bits per dim averaged over the batch, seconds per image)`."""
    sde, model = _model(sz, jnp.float32)
    d = 3 * sz["hw"] * sz["hw"]
    k = jr.randint(jr.key(3), (sz["lik_batch"], 3, sz["hw"], sz["hw"]), 0, 256)
    x = sg.dequantize(jr.key(4), k)

    def one(x, key):
        logp, _ = sg.log_likelihood(sde, model, x, key, "heun", trace="hutchinson",
                                    num_steps=sz["lik_steps"])  # fmt: skip
        return logp

    fn = jax.jit(jax.vmap(one))
    keys = jr.split(jr.key(5), sz["lik_batch"])
    t = _median_time(lambda: fn(x, keys), max(1, sz["rounds"] // 2))
    bpd = sg.bits_per_dim(fn(x, keys), d)
    return float(jnp.mean(bpd)), t / sz["lik_batch"]


def run(small: bool = False) -> tuple[str, dict]:
    """`(markdown, data)`."""
    sz = _sizes(small)
    train32 = bench_train(sz, jnp.float32)
    train16 = bench_train(sz, jnp.bfloat16)
    rate, peak = bench_sample(sz)
    bpd, lik_s = bench_likelihood(sz)
    dev = jax.devices()[0]
    hw = f"{sz['hw']}x{sz['hw']}x3"
    rows = [
        f"| U-Net training, {hw}, batch {sz['batch']}, float32 | {train32:.1f} images/s |",
        f"| U-Net training, {hw}, batch {sz['batch']}, bfloat16 | {train16:.1f} images/s |",
        f"| sampling, DPM-Solver++(2M), {sz['sample_steps']} steps, "
        f"{sz['sample_batch']} images | "
        f"{rate:.1f} images/s |",
        "| peak device memory after sampling | "
        + ("not reported by this device |" if peak is None else f"{peak / 2**20:.0f} MiB |"),
        f"| likelihood (Hutchinson, heun, {sz['lik_steps']} steps), {sz['lik_batch']} "
        "images | "
        f"{bpd:.2f} bits/dim (untrained network), {lik_s:.3f} s per image |",
    ]  # fmt: skip
    text = (f"On {dev.platform} ({dev.device_kind}); U-Net with base channels "
            f"{sz['base']}, channel multipliers {sz['mults']}.\n\n| what | measured |\n"
            "| --- | --- |\n" + "\n".join(rows))  # fmt: skip
    data = {"train_images_per_s": {"float32": train32, "bfloat16": train16},
            "sample_images_per_s": rate, "peak_bytes": peak, "bits_per_dim": bpd,
            "likelihood_s_per_image": lik_s, "sizes": sz}  # fmt: skip
    return text, data


if __name__ == "__main__":
    import sys

    print(run(small="--small" in sys.argv)[0])

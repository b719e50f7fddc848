"""Classic and predictor–corrector samplers on the 2-D 8-Gaussian mixture with its
exact score: time per sample, score evaluations (NFE), and the squared MMD to exact
mixture samples versus NFE, for pc_sample, ddpm_sample, ddim_sample,
annealed_langevin, sample_ode (Heun, Tsit5 on fixed steps) and sample_sde
(Euler–Maruyama). The baseline is the MMD between two exact sample sets of the same
sizes, measured in the same run.

    python benchmarks/bench_samplers.py            # NFE 10, 20, 50, 100 (a few minutes)
    python benchmarks/bench_samplers.py --nfe 10 20 50 100 250 1000 --batch 2000
"""

import argparse
import statistics
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

import sdegen as sg


class IsoScore(eqx.Module):
    """Exact score of the isotropic 8-Gaussian mixture diffused by `sde` (the closed
    form of `GaussianMixture.score(sde)`, cheaper than its Cholesky path). With
    `sde=None`, `t` is the noise level sigma (NCSN's noise-conditional score)."""

    means: jax.Array
    var0: float
    sde: object

    def __call__(self, t, x):
        if self.sde is None:
            a, s2 = 1.0, t**2
        else:
            a, s2 = self.sde.alpha(t), self.sde.sigma(t) ** 2
        v = a**2 * self.var0 + s2
        d = a * self.means - x[None, :]
        r = jax.nn.softmax(-jnp.sum(d**2, -1) / (2 * v))
        return (r @ d) / v


class Counting(eqx.Module):
    """Wraps a score and counts its calls at run time (unbatched use only)."""

    fn: object

    def __call__(self, t, x):
        jax.debug.callback(_inc)
        return self.fn(t, x)


_COUNT = [0]


def _inc():
    _COUNT[0] += 1


def samplers(gmm):
    """name -> (NFE -> sampler(score_wrapper, key) or None when NFE does not fit)."""
    vp, ve = sg.VPSDE(), sg.VESDE(0.01, 20.0)
    var0 = float(gmm.covs[0, 0, 0])
    s_vp, s_ve, s_nc = (IsoScore(gmm.means, var0, s) for s in (vp, ve, None))
    abar_1000 = sg.vp_alphas_cumprod(vp, 1000)
    shape = (2,)

    def pc(sde, score, pred, corr, per):
        def make(nfe):
            n = nfe // per
            if n < 1:
                return None
            return lambda w, k: sg.pc_sample(k, sde, w(score), shape, pred, corr,
                                             num_steps=n)  # fmt: skip
        return make

    def ddpm(nfe):
        betas = sg.vp_betas(vp, nfe)
        return lambda w, k: sg.ddpm_sample(
            k, sg.vp_eps_model(w(s_vp), vp, nfe), betas, shape)

    def ddim(eta):
        def make(nfe):
            return lambda w, k: sg.ddim_sample(
                k, sg.vp_eps_model(w(s_vp), vp, 1000), abar_1000, shape, nfe, eta=eta)
        return make

    def langevin(nfe):
        if nfe < 10:
            return None
        sig = sg.sigma_ladder(10, 0.01, 10.0)
        return lambda w, k: sg.annealed_langevin(k, w(s_nc), sig, shape, nfe // 10,
                                                 1e-5, denoise=False)  # fmt: skip

    def ode(solver, per):
        def make(nfe):
            n = nfe // per
            if n < 1:
                return None
            return lambda w, k: sg.sample_ode(k, vp, w(s_vp), shape, solver,
                                              num_steps=n)  # fmt: skip
        return make

    def sde_em(nfe):
        return lambda w, k: sg.sample_sde(k, vp, w(s_vp), shape, "euler_maruyama",
                                          num_steps=nfe)  # fmt: skip

    return {
        "pc VE reverse_diffusion": pc(ve, s_ve, "reverse_diffusion", "none", 1),
        "pc VE reverse_diffusion + langevin": pc(ve, s_ve, "reverse_diffusion",
                                                 "langevin", 2),
        "pc VP ancestral": pc(vp, s_vp, "ancestral", "none", 1),
        "pc VP ancestral + langevin": pc(vp, s_vp, "ancestral", "langevin", 2),
        "ddpm (VP bridge, N = NFE)": ddpm,
        "ddim eta=0 (N = 1000)": ddim(0.0),
        "ddim eta=1 (N = 1000)": ddim(1.0),
        "annealed langevin (10 levels)": langevin,
        "sample_ode heun (fixed)": ode("heun", 2),
        "sample_ode tsit5 (fixed)": ode("tsit5", 6),
        "sample_sde euler_maruyama": sde_em,
    }  # fmt: skip


def count_nfe(fn):
    _COUNT[0] = 0
    jax.block_until_ready(fn(Counting, jr.key(0)))
    return _COUNT[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--batch", type=int, default=1000, help="samples per MMD estimate")
    p.add_argument("--time-batch", type=int, default=4096)
    p.add_argument("--time-nfe", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    gmm = sg.data.eight_gaussians()
    ref = gmm.sample(jr.key(1), 4 * args.batch)
    baseline = float(sg.metrics.mmd(gmm.sample(jr.key(2), args.batch), ref))
    table = samplers(gmm)
    ident = lambda s: s
    keys = jr.split(jr.key(3), args.batch)

    print(f"## Squared MMD x 1e3 to {4 * args.batch} exact samples "
          f"({args.batch} samples each); exact-vs-exact baseline "
          f"{1e3 * baseline:.2f}\n")  # fmt: skip
    print("| sampler | " + " | ".join(f"NFE {n}" for n in args.nfe) + " |")
    print("| --- |" + " --- |" * len(args.nfe))
    for name, make in table.items():
        row = []
        for nfe in args.nfe:
            fn = make(nfe)
            if fn is None:
                row.append("–")
                continue
            x = jax.jit(jax.vmap(lambda k: fn(ident, k)))(keys)
            row.append(f"{1e3 * float(sg.metrics.mmd(x, ref)):.2f}")
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)

    print(f"\n## Time per sample at nominal NFE {args.time_nfe} "
          f"(batch {args.time_batch}, median of {args.repeats}, compile excluded)\n")
    print("| sampler | NFE counted | compile (s) | time / sample (us) |")
    print("| --- | --- | --- | --- |")
    tkeys = jr.split(jr.key(4), args.time_batch)
    for name, make in table.items():
        fn = make(args.time_nfe)
        nfe = count_nfe(fn)
        run = jax.jit(jax.vmap(lambda k: fn(ident, k)))
        t0 = time.perf_counter()
        jax.block_until_ready(run(tkeys))
        compile_s = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run(tkeys))
            times.append(time.perf_counter() - t0)
        per = 1e6 * statistics.median(times) / args.time_batch
        print(f"| {name} | {nfe} | {compile_s:.1f} | {per:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Try bad inputs on sdegen's public API and its command line, and classify what a user
would see: a clear error (it names the argument or flag, or says non-finite), an
unclear error, or nothing (a silent wrong result).

    python scripts/bad_inputs.py            # the summary and every case that is not clear

Each case runs eagerly; cases marked `jit` also run under `jax.jit` (and count twice).
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr


jax.config.update("jax_enable_x64", True)

import sdegen as sg  # noqa: E402


KEY = jr.key(0)
SDE = sg.VPSDE()
GMM = sg.data.eight_gaussians()
SCORE = GMM.score(SDE)
X2 = jnp.array([0.3, -0.2])
NAN_SCORE = lambda t, x: jnp.where(t < 0.5, jnp.nan, 1.0) * SCORE(t, x)
SCALAR_SCORE = lambda t, x: jnp.sum(x)
BATCH_SCORE = lambda t, x: x[None]
EPS_MODEL = lambda n, x: 0.1 * x
ABAR = sg.vp_alphas_cumprod(SDE, 50)
BETAS = sg.linear_beta_schedule(50)
SIGMAS = sg.sigma_ladder(5, 0.01, 5.0)
NC = GMM.noise_conditional_score()


def _cases():
    c = {}
    # ------------------------------------------------------------ SDEs
    c["VPSDE beta_min < 0"] = lambda: sg.VPSDE(beta_min=-1.0)
    c["VPSDE beta_max nan"] = lambda: sg.VPSDE(beta_max=float("nan"))
    c["VPSDE beta_max < beta_min"] = lambda: sg.VPSDE(beta_min=2.0, beta_max=1.0)
    c["VPSDE T = 0"] = lambda: sg.VPSDE(T=0.0)
    c["SubVPSDE beta_min < 0"] = lambda: sg.SubVPSDE(beta_min=-0.5)
    c["VESDE sigma_min = 0"] = lambda: sg.VESDE(sigma_min=0.0)
    c["VESDE sigma_max < sigma_min"] = lambda: sg.VESDE(sigma_min=1.0, sigma_max=0.5)
    c["EDMSDE T < 0"] = lambda: sg.EDMSDE(T=-1.0)
    c["sde.marginal(2.0, x)"] = lambda: SDE.marginal(2.0, X2)
    c["sde.marginal(-1, x)"] = lambda: SDE.marginal(-1.0, X2)
    c["sde.alpha(2.0)"] = lambda: SDE.alpha(2.0)
    c["sde.drift(1.5, x)"] = lambda: SDE.drift(1.5, X2)
    c["sde.diffusion(-0.1)"] = lambda: SDE.diffusion(-0.1)
    c["jit: sde.marginal(t = 2)"] = lambda: jax.jit(lambda t: SDE.marginal(t, X2)[0])(2.0)
    c["jit: sde.sigma(t = -1)"] = lambda: jax.jit(SDE.sigma)(-1.0)
    c["prior_sample shape (0,)"] = lambda: SDE.prior_sample(KEY, (0,))
    c["prior_sample shape 'a'"] = lambda: SDE.prior_sample(KEY, "a")
    c["CustomSDE alpha not callable"] = lambda: sg.CustomSDE(1.0, lambda t: t)
    c["CustomSDE snr increasing"] = lambda: sg.CustomSDE(lambda t: 0.5 + t, lambda t: 0.1 + 0 * t)
    c["BetaSDE kind unknown"] = lambda: sg.BetaSDE(lambda t: 1.0 + 0 * t, kind="ve")
    c["BetaSDE beta < 0"] = lambda: sg.BetaSDE(lambda t: -1.0 + 0 * t)
    # ------------------------------------------------------------ exact scores / data
    c["mixture score t = 2"] = lambda: SCORE(2.0, X2)
    c["jit: mixture score t = 2"] = lambda: jax.jit(lambda t: SCORE(t, X2))(2.0)
    c["mixture score x wrong dim"] = lambda: SCORE(0.5, jnp.zeros(3))
    c["GaussianMixture weights sum != 1"] = lambda: sg.data.GaussianMixture(
        jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2), jnp.array([0.5, 0.6]))
    c["GaussianMixture cov not PD"] = lambda: sg.data.GaussianMixture(
        jnp.zeros((1, 2)), -jnp.eye(2)[None], jnp.array([1.0]))
    c["GaussianMixture means shape"] = lambda: sg.data.GaussianMixture(
        jnp.zeros((2,)), jnp.eye(2)[None], jnp.array([1.0]))
    c["gmm.sample n = 0"] = lambda: GMM.sample(KEY, 0)
    # ------------------------------------------------------------ sample_sde / sample_ode
    sde_ = lambda **kw: sg.sample_sde(KEY, SDE, kw.pop("score", SCORE), kw.pop("shape", (2,)),
                                      kw.pop("solver", "euler_maruyama"),
                                      **{"num_steps": 20, **kw})  # fmt: skip
    ode_ = lambda **kw: sg.sample_ode(KEY, SDE, kw.pop("score", SCORE), kw.pop("shape", (2,)),
                                      kw.pop("solver", "heun"),
                                      **{"num_steps": 20, **kw})  # fmt: skip
    c["sample_sde unknown solver"] = lambda: sde_(solver="rk99")
    c["sample_sde ODE-only solver"] = lambda: sde_(solver="tsit5")
    c["sample_ode SDE-only solver"] = lambda: ode_(solver="shark")
    c["sample_sde shape (0,)"] = lambda: sde_(shape=(0,))
    c["sample_sde shape 2.5"] = lambda: sde_(shape=(2.5,))
    c["sample_sde num_steps 0"] = lambda: sde_(num_steps=0)
    c["sample_sde num_steps 1.5"] = lambda: sde_(num_steps=1.5)
    c["sample_sde eps 0"] = lambda: sde_(eps=0.0)
    c["sample_sde eps > T"] = lambda: sde_(eps=2.0)
    c["sample_sde ts increasing"] = lambda: sde_(ts=jnp.array([0.1, 0.5, 1.0]))
    c["sample_sde ts nan"] = lambda: sde_(ts=jnp.array([1.0, jnp.nan, 0.1]))
    c["sample_sde ts beyond T"] = lambda: sde_(ts=jnp.array([1.5, 0.5, 0.1]))
    c["sample_sde grid unknown"] = lambda: sde_(grid="cosine")
    c["sample_sde x_init wrong shape"] = lambda: sde_(x_init=jnp.zeros(3))
    c["sample_sde x_init nan"] = lambda: sde_(x_init=jnp.array([jnp.nan, 0.0]))
    c["jit: sample_sde x_init nan"] = lambda: jax.jit(lambda x: sde_(x_init=x))(
        jnp.array([jnp.nan, 0.0]))
    c["sample_sde score scalar"] = lambda: sde_(score=SCALAR_SCORE)
    c["sample_sde score batched"] = lambda: sde_(score=BATCH_SCORE)
    c["sample_sde score NaN"] = lambda: sde_(score=NAN_SCORE)
    c["jit: sample_sde score NaN"] = lambda: jax.jit(lambda k: sg.sample_sde(
        k, SDE, NAN_SCORE, (2,), num_steps=20))(KEY)
    c["vmap: sample_sde score NaN"] = lambda: jax.vmap(lambda k: sg.sample_sde(
        k, SDE, NAN_SCORE, (2,), num_steps=20))(jr.split(KEY, 3))
    c["sample_sde rtol < 0"] = lambda: sde_(solver="heun", rtol=-1.0)
    c["sample_sde rtol, no error estimate"] = lambda: sde_(rtol=1e-3)
    c["sample_sde adaptive score NaN"] = lambda: sde_(solver="heun", rtol=1e-2, atol=1e-2,
                                                      score=NAN_SCORE)
    c["sample_ode score NaN (fixed)"] = lambda: ode_(score=NAN_SCORE)
    c["sample_ode score NaN (adaptive)"] = lambda: sg.sample_ode(KEY, SDE, NAN_SCORE, (2,))
    c["jit: sample_ode score NaN (adaptive)"] = lambda: jax.jit(lambda k: sg.sample_ode(
        k, SDE, NAN_SCORE, (2,)))(KEY)
    c["sample_ode score scalar"] = lambda: ode_(score=SCALAR_SCORE)
    c["sample_ode atol = 0"] = lambda: sg.sample_ode(KEY, SDE, SCORE, (2,), atol=0.0)
    c["sample_ode fixed solver, no num_steps"] = lambda: sg.sample_ode(
        KEY, SDE, SCORE, (2,), "dpmpp_2m")
    c["sample_ode sde not an SDE"] = lambda: sg.sample_ode(KEY, "vp", SCORE, (2,))
    c["sample_ode score not callable"] = lambda: sg.sample_ode(KEY, SDE, 3.0, (2,))
    c["dpmpp_2m score NaN"] = lambda: ode_(solver="dpmpp_2m", score=NAN_SCORE)
    c["encode x0 nan"] = lambda: sg.encode(SDE, SCORE, jnp.array([jnp.nan, 0.0]))
    c["decode z wrong type"] = lambda: sg.decode(SDE, SCORE, "z")
    c["time_grid unknown kind"] = lambda: sg.time_grid(SDE, 10, "cosine")
    c["time_grid num_steps 0"] = lambda: sg.time_grid(SDE, 0)
    c["solver() unknown"] = lambda: sg.solver("rk99")
    c["solver() bad kind"] = lambda: sg.solver("heun", kind="pde")
    # ------------------------------------------------------------ pc_sample
    pc = lambda **kw: sg.pc_sample(KEY, SDE, kw.pop("score", SCORE), (2,),
                                   **{"num_steps": 10, **kw})  # fmt: skip
    c["pc_sample unknown predictor"] = lambda: pc(predictor="foo")
    c["pc_sample ODE solver as predictor"] = lambda: pc(predictor="tsit5")
    c["pc_sample unknown corrector"] = lambda: pc(corrector="ald")
    c["pc_sample snr 0"] = lambda: pc(snr=0.0)
    c["pc_sample corrector_steps 0"] = lambda: pc(corrector_steps=0)
    c["pc_sample nothing to do"] = lambda: pc(predictor=None, corrector="none")
    c["pc_sample score NaN"] = lambda: pc(score=NAN_SCORE)
    c["LangevinCorrector step_rule unknown"] = lambda: sg.LangevinCorrector(0.1, 1, "x")
    # ------------------------------------------------------------ DDIM / DDPM
    c["ddim alphas_cumprod increasing"] = lambda: sg.ddim_sample(KEY, EPS_MODEL, ABAR[::-1], (2,))
    c["ddim alphas_cumprod > 1"] = lambda: sg.ddim_sample(KEY, EPS_MODEL, ABAR + 1.0, (2,))
    c["ddim num_steps > N"] = lambda: sg.ddim_sample(KEY, EPS_MODEL, ABAR, (2,), num_steps=99)
    c["ddim eta < 0"] = lambda: sg.ddim_sample(KEY, EPS_MODEL, ABAR, (2,), eta=-0.1)
    c["ddim eps_model scalar"] = lambda: sg.ddim_sample(KEY, lambda n, x: jnp.sum(x), ABAR, (2,))
    c["ddim eps_model NaN"] = lambda: sg.ddim_sample(KEY, lambda n, x: x * jnp.nan, ABAR, (2,))
    c["ddim eps_model not callable"] = lambda: sg.ddim_sample(KEY, None, ABAR, (2,))
    c["ddpm betas >= 1"] = lambda: sg.ddpm_sample(KEY, EPS_MODEL, BETAS + 1.0, (2,))
    c["ddpm variance unknown"] = lambda: sg.ddpm_sample(KEY, EPS_MODEL, BETAS, (2,),
                                                        variance="large")
    c["ddpm betas 2-D"] = lambda: sg.ddpm_sample(KEY, EPS_MODEL, BETAS[None], (2,))
    c["linear_beta_schedule beta_end > 1"] = lambda: sg.linear_beta_schedule(10, 1e-4, 2.0)
    # ------------------------------------------------------------ annealed Langevin
    al = lambda **kw: sg.annealed_langevin(KEY, kw.pop("score", NC), kw.pop("sigmas", SIGMAS),
                                           (2,), **{"steps_per_level": 2, **kw})  # fmt: skip
    c["annealed sigmas increasing"] = lambda: al(sigmas=SIGMAS[::-1])
    c["annealed sigmas negative"] = lambda: al(sigmas=jnp.array([1.0, -0.1]))
    c["annealed steps_per_level 0"] = lambda: al(steps_per_level=0)
    c["annealed step_lr 0"] = lambda: al(step_lr=0.0)
    c["annealed score NaN"] = lambda: al(score=lambda s, x: x * jnp.nan)
    c["sigma_ladder sigma_max < sigma_min"] = lambda: sg.sigma_ladder(5, 1.0, 0.5)
    # ------------------------------------------------------------ likelihood
    ll = lambda **kw: sg.log_likelihood(SDE, kw.pop("score", SCORE), kw.pop("x", X2), **kw)
    c["log_likelihood trace unknown"] = lambda: ll(trace="approx")
    c["log_likelihood probe unknown"] = lambda: ll(trace="hutchinson", key=KEY, probe="x")
    c["log_likelihood hutchinson without key"] = lambda: ll(trace="hutchinson")
    c["log_likelihood eps 0"] = lambda: ll(eps=0.0)
    c["log_likelihood x nan"] = lambda: ll(x=jnp.array([jnp.nan, 0.0]))
    c["jit: log_likelihood x nan"] = lambda: jax.jit(lambda x: ll(x=x)[0])(
        jnp.array([jnp.nan, 0.0]))
    c["log_likelihood num_probes 0"] = lambda: ll(trace="hutchinson", key=KEY, num_probes=0)
    c["log_likelihood orthogonal > d"] = lambda: ll(trace="hutchinson", key=KEY,
                                                   probe="orthogonal", num_probes=3)
    c["log_likelihood adjoint wrong"] = lambda: ll(adjoint="backsolve")
    c["log_likelihood score NaN"] = lambda: ll(score=NAN_SCORE)
    c["jit: log_likelihood score NaN"] = lambda: jax.jit(lambda x: ll(score=NAN_SCORE, x=x)[0])(X2)
    c["log_likelihood_batch xs 0-D"] = lambda: sg.log_likelihood_batch(SDE, SCORE, 1.0)
    c["log_likelihood_batch batch_size 0"] = lambda: sg.log_likelihood_batch(
        SDE, SCORE, X2[None], batch_size=0)
    c["bits_per_dim num_dims 0"] = lambda: sg.bits_per_dim(jnp.zeros(2), 0)
    c["dequantize float data"] = lambda: sg.dequantize(KEY, jnp.array([0.5]))
    # ------------------------------------------------------------ losses and training
    model = sg.nn.NoiseParam(sg.nn.MLP(2, 8, 1, key=KEY), SDE)
    batch = GMM.sample(KEY, 8)
    c["dsm_loss weighting unknown"] = lambda: sg.dsm_loss(model, SDE, batch, KEY, weighting="x")
    c["dsm_loss batch 1-D"] = lambda: sg.dsm_loss(model, SDE, batch[0], KEY)
    c["dsm_loss batch nan"] = lambda: sg.dsm_loss(model, SDE, batch * jnp.nan, KEY)
    c["dsm_loss model wrong output"] = lambda: sg.dsm_loss(lambda t, x: x[:1], SDE, batch, KEY)
    c["dsm_loss labels float"] = lambda: sg.dsm_loss(model, SDE, batch, KEY, labels=jnp.ones(8))
    c["dsm_loss eps > T"] = lambda: sg.dsm_loss(model, SDE, batch, KEY, eps=2.0)
    c["dsm_loss reduction unknown"] = lambda: sg.dsm_loss(model, SDE, batch, KEY, reduction="max")
    c["ncsn_loss sigmas increasing"] = lambda: sg.ncsn_loss(model, SIGMAS[::-1], batch, KEY)
    c["TrainConfig lr 0"] = lambda: sg.TrainConfig(lr=0.0)
    c["TrainConfig batch_size 0"] = lambda: sg.TrainConfig(batch_size=0)
    c["TrainConfig ema_decay 1.5"] = lambda: sg.TrainConfig(ema_decay=1.5)
    c["train cfg not TrainConfig"] = lambda: sg.train(model, lambda m, b, k: 0.0, batch, {})
    # ------------------------------------------------------------ checkpoints
    tmp = Path(tempfile.mkdtemp())
    good = tmp / "good.ckpt"
    sg.save_checkpoint(good, model, {"a": 1}, step=0)
    bad = tmp / "bad.ckpt"
    bad.write_bytes(good.read_bytes()[:-20])
    c["load_checkpoint truncated"] = lambda: sg.load_checkpoint(bad, model)
    c["load_checkpoint missing file"] = lambda: sg.load_checkpoint(tmp / "none.ckpt", model)
    c["load_checkpoint wrong structure"] = lambda: sg.load_checkpoint(good, (model, model))
    c["load_model not a model file"] = lambda: sg.load_model(bad)
    # ------------------------------------------------------------ guidance, inverse
    c["classifier_free_guidance label float"] = lambda: sg.classifier_free_guidance(
        lambda t, x, label=None: x, 1.5, 2.0)
    c["inpaint mask wrong shape"] = lambda: sg.inpaint(KEY, SDE, SCORE, X2, jnp.ones(3, bool),
                                                       num_steps=5)
    c["inpaint y nan"] = lambda: sg.inpaint(KEY, SDE, SCORE, X2 * jnp.nan,
                                            jnp.array([True, False]), num_steps=5)
    c["inpaint mask values 2"] = lambda: sg.inpaint(KEY, SDE, SCORE, X2, jnp.array([2, 0]),
                                                    num_steps=5)
    c["solve_inverse A wrong shape"] = lambda: sg.solve_inverse(KEY, SDE, SCORE, jnp.zeros(1),
                                                                jnp.ones((1, 3)), num_steps=5)
    c["solve_inverse method unknown"] = lambda: sg.solve_inverse(KEY, SDE, SCORE, jnp.zeros(1),
                                                                 jnp.ones((1, 2)), method="x")
    c["solve_inverse noise_std < 0"] = lambda: sg.solve_inverse(
        KEY, SDE, SCORE, jnp.zeros(1), jnp.ones((1, 2)), noise_std=-1.0)
    c["colorize num_channels 0"] = lambda: sg.colorize(KEY, SDE, SCORE, jnp.zeros((2, 2)),
                                                       num_channels=0)
    c["mixture_posterior A and mask"] = lambda: sg.mixture_posterior(GMM, X2, jnp.eye(2),
                                                                     mask=jnp.ones(2))
    # ------------------------------------------------------------ metrics
    c["mmd mismatched dims"] = lambda: sg.metrics.mmd(jnp.zeros((3, 2)), jnp.zeros((3, 3)))
    c["frechet_distance nan"] = lambda: sg.metrics.frechet_distance(
        jnp.full((4, 2), jnp.nan), jnp.zeros((4, 2)))
    c["sample_report shapes"] = lambda: sg.metrics.sample_report(
        jnp.zeros((4, 2)), jnp.zeros((8, 3)), key=KEY)
    return c


def _cli_cases(tmp: Path):
    f = tmp / "a_file"
    f.write_text("x")
    locked = Path("/proc/sdegen-not-writable")  # not writable, even by root
    return {
        "cli: --out names a file": ["train", "--quick", "--out", str(f)],
        "cli: --out not writable": ["train", "--quick", "--out", str(locked / "run")],
        "cli: sample --out without run": ["sample", "--out", str(tmp)],
        "cli: sample --num-samples 0": ["sample", "--out", str(tmp), "--num-samples", "0"],
        "cli: train --steps 0": ["train", "--out", str(tmp / "r"), "--steps", "0"],
        "cli: unknown solver": ["train", "--quick", "--out", str(tmp / "r2"), "--solver",
                                "rk99"],
        "cli: unreachable hub data set": ["train", "--quick", "--out", str(tmp / "r3"),
                                          "--dataset", "no-such-user/no-such-set"],
        "cli: --image-size 0": ["train", "--quick", "--out", str(tmp / "r4"),
                                "--image-size", "0"],
        "cli: --guidance without --label": ["sample", "--out", str(tmp), "--guidance", "2"],
        "cli: --lr -1": ["train", "--quick", "--out", str(tmp / "r5"), "--lr", "-1"],
    }  # fmt: skip


CLEAR = re.compile(r"`[^`]+`|--[a-z][a-z\-]*|non-finite|[Uu]nknown \w+ '|[Cc]heckpoint '", re.S)


def classify(fn):
    try:
        out = fn()
        jax.block_until_ready(out)
    except Exception as e:  # noqa: BLE001
        msg = str(e).split("\n--------------------")[0]
        return ("clear" if CLEAR.search(msg) else "unclear"), msg.strip()[:200]
    return "silent", ""


def classify_cli(argv):
    proc = subprocess.run([sys.executable, "-m", "sdegen_cli", *argv], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    err = proc.stderr.strip().splitlines()
    if proc.returncode == 0:
        return "silent", ""
    one_line = len(err) >= 1 and err[-1].startswith("sdegen") and "Traceback" not in proc.stderr
    return ("clear" if one_line and CLEAR.search(err[-1]) else "unclear"), (err[-1] if err else "")


def main():
    results = {name: classify(fn) for name, fn in _cases().items()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in _cli_cases(Path(tmp)).items():
            results[name] = classify_cli(argv)
    counts = {k: sum(v[0] == k for v in results.values()) for k in ("clear", "unclear", "silent")}
    print(f"{len(results)} bad inputs: {counts['clear']} clear errors, "
          f"{counts['unclear']} unclear, {counts['silent']} silent")
    for name, (kind, msg) in results.items():
        if kind != "clear" or "-v" in sys.argv:
            print(f"  [{kind}] {name}: {msg}")


if __name__ == "__main__":
    main()


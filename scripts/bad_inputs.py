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
    _issue25_cases(c, model, tmp)
    return c


def _issue25_cases(c, model, tmp):
    """The classes of issue 25: traced arguments, tamper-evident files, writers into a
    run folder, empty answers, user functions, silent extremes."""
    import json
    import struct

    # ------------------------------------------------------------ traced arguments
    J = lambda f, v: lambda: jax.jit(f)(jnp.asarray(v))  # noqa: E731
    sde_ = lambda **kw: sg.sample_sde(KEY, SDE, SCORE, (2,), kw.pop("solver", "euler_maruyama"),
                                      **{"num_steps": 5, **kw})  # fmt: skip
    up = jnp.array([0.01, 0.5, 1.0])
    c["jit: sample_sde eps 0"] = J(lambda e: sde_(eps=e), 0.0)
    c["jit: sample_sde ancestral ts increasing"] = J(
        lambda ts: sg.sample_sde(KEY, SDE, SCORE, (2,), "ancestral", ts=ts), up)
    c["jit: sample_sde ts beyond T"] = J(lambda ts: sde_(ts=ts), jnp.array([1.5, 0.5, 0.1]))
    c["jit: sample_sde ts nan"] = J(lambda ts: sde_(ts=ts), jnp.array([1.0, jnp.nan, 0.1]))
    c["jit: sample_sde rtol < 0"] = J(lambda r: sde_(solver="heun", rtol=r, atol=1e-2), -1.0)
    c["jit: sample_sde num_steps traced"] = J(lambda n: sde_(num_steps=n), 5)
    c["jit: sample_ode eps > T"] = J(lambda e: sg.sample_ode(KEY, SDE, SCORE, (2,), eps=e), 2.0)
    c["jit: sample_ode atol nan"] = J(lambda a: sg.sample_ode(KEY, SDE, SCORE, (2,), atol=a),
                                      jnp.nan)
    c["jit: sample_ode_batch rtol 0"] = J(lambda r: sg.sample_ode_batch(
        jr.split(KEY, 2), SDE, SCORE, (2,), rtol=r), 0.0)
    c["jit: pc_sample snr 0"] = J(lambda v: sg.pc_sample(KEY, SDE, SCORE, (2,), num_steps=3,
                                                          snr=v), 0.0)
    c["jit: encode eps 0"] = J(lambda e: sg.encode(SDE, SCORE, X2, eps=e), 0.0)
    c["jit: log_likelihood eps 0"] = J(lambda e: sg.log_likelihood(SDE, SCORE, X2, eps=e)[0],
                                       0.0)
    c["jit: log_likelihood rtol 0"] = J(lambda r: sg.log_likelihood(SDE, SCORE, X2, rtol=r)[0],
                                        0.0)
    c["jit: ddim eta < 0"] = J(lambda v: sg.ddim_sample(KEY, EPS_MODEL, ABAR, (2,), eta=v), -0.5)
    c["jit: ddim alphas_cumprod increasing"] = J(
        lambda a: sg.ddim_sample(KEY, EPS_MODEL, a, (2,)), ABAR[::-1])
    c["jit: ddpm betas >= 1"] = J(lambda b: sg.ddpm_sample(KEY, EPS_MODEL, b, (2,)), BETAS + 1)
    c["jit: annealed sigmas increasing"] = J(
        lambda v: sg.annealed_langevin(KEY, NC, v, (2,), steps_per_level=2), SIGMAS[::-1])
    c["jit: annealed step_lr 0"] = J(lambda v: sg.annealed_langevin(
        KEY, NC, SIGMAS, (2,), steps_per_level=2, step_lr=v), 0.0)
    c["jit: solve_inverse noise_std < 0"] = J(lambda v: sg.solve_inverse(
        KEY, SDE, SCORE, jnp.zeros(1), jnp.ones((1, 2)), noise_std=v, num_steps=3), -1.0)
    c["jit: inpaint snr < 0"] = J(lambda v: sg.inpaint(
        KEY, SDE, SCORE, X2, jnp.array([True, False]), snr=v, num_steps=3), -1.0)
    c["jit: time_grid eps 0"] = J(lambda e: sg.time_grid(SDE, 5, "logsnr", eps=e), 0.0)
    c["jit: dsm_loss t 0"] = J(lambda t: sg.dsm_loss(lambda s, x: x, SDE, X2[None], KEY, t=t),
                               0.0)
    c["jit: classifier_free_guidance w < 0"] = J(lambda w: sg.classifier_free_guidance(
        lambda t, x, label=None: x, 1, w)(0.5, X2), -1.0)
    # ------------------------------------------------------------ tamper-evident files
    net = {"net": "mlp", "width": 4, "depth": 1, "param": "noise"}
    small = sg.build_model(SDE, (2,), net, key=KEY)
    exported = sg.export_model(tmp / "m.sdegen", small, sde=SDE, shape=(2,), network=net)
    raw = exported.read_bytes()
    n = struct.unpack("<Q", raw[12:20])[0]
    head = json.loads(raw[20:20 + n])

    def edited(name, change):
        h = json.loads(json.dumps(head))
        change(h)
        b = json.dumps(h, sort_keys=True).encode()
        p = tmp / name
        p.write_bytes(raw[:12] + struct.pack("<Q", len(b)) + b + raw[20 + n:])
        return p

    beta = edited("beta.sdegen", lambda h: h["hparams"]["sde"].update(beta_max=5.0))
    param = edited("param.sdegen", lambda h: h["hparams"]["network"].update(param="score"))
    shape = edited("shape.sdegen", lambda h: h["hparams"].update(shape=[1, 2]))
    flipped = tmp / "flip.sdegen"
    flipped.write_bytes(raw[:30] + bytes([raw[30] ^ 1]) + raw[31:])
    c["load_model header beta_max edited"] = lambda: sg.load_model(beta)
    c["load_model header param edited"] = lambda: sg.load_model(param)
    c["load_model header shape edited"] = lambda: sg.load_model(shape)
    c["load_model one header byte flipped"] = lambda: sg.load_model(flipped)
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    ck = sg.save_checkpoint(run / "checkpoints" / "step_000000001.ckpt", {"a": jnp.ones(2)})
    kw = dict(sde=SDE, shape=(2,), network=net)
    c["export_model over a checkpoint"] = lambda: sg.export_model(ck, small, **kw)
    c["export_model into a run's checkpoints/"] = lambda: sg.export_model(
        run / "checkpoints" / "m.sdegen", small, **kw)
    c["export_model over config.json"] = lambda: sg.export_model(run / "config.json", small, **kw)
    # ------------------------------------------------------------ empty answers
    c["TrainConfig num_steps 0"] = lambda: sg.TrainConfig(num_steps=0)
    c["advise nothing measurable"] = lambda: sg.advise(KEY, SDE, SCORE, GMM.sample(KEY, 16),
                                                       solvers=["tsit5"], nfes=[5])
    # ------------------------------------------------------------ user functions
    c["BetaSDE beta untraceable"] = lambda: sg.BetaSDE(lambda t: 1.0 if t < 0.5 else 2.0)
    c["BetaSDE beta negative late"] = lambda: sg.BetaSDE(lambda t: 1.0 - 3.0 * t)
    c["BetaSDE integral contradicts beta"] = lambda: sg.BetaSDE(
        lambda t: 0.1 + 19.9 * t, integral=lambda t: 0.1 * t + 5.0 * t**2)
    # ------------------------------------------------------------ silent extremes
    c["sample_ode dpm_solver_2 one step"] = lambda: sg.sample_ode(KEY, SDE, SCORE, (2,),
                                                                  "dpm_solver_2", num_steps=1)
    c["sample_ode dpm_solver_3 one step"] = lambda: sg.sample_ode(KEY, SDE, SCORE, (2,),
                                                                  "dpm_solver_3", num_steps=1)
    c["sample_sde edm_sde one step"] = lambda: sg.sample_sde(KEY, SDE, SCORE, (2,), "edm_sde",
                                                             num_steps=1)
    c["sample_report constant data"] = lambda: sg.metrics.sample_report(
        GMM.sample(KEY, 16), jnp.ones((16, 2)), key=KEY)
    c["mmd x nan"] = lambda: sg.metrics.mmd(jnp.full((4, 2), jnp.nan), jnp.zeros((4, 2)))
    c["sliced_wasserstein y inf"] = lambda: sg.metrics.sliced_wasserstein(
        KEY, jnp.zeros((4, 2)), jnp.full((4, 2), jnp.inf))
    # sparse labels: a 1,000,001-class model
    import datasets

    ds = datasets.Dataset.from_dict({"x": [[0.0, 1.0], [1.0, 0.0]] * 8,
                                     "label": [0, 10**6] * 8})  # fmt: skip
    ds.save_to_disk(str(tmp / "sparse"))
    c["load_hf labels {0, 10^6}"] = lambda: sg.data.load_hf(str(tmp / "sparse"),
                                                            label_column="label")


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
        # issue 25: options that cannot act
        "cli: --warmup longer than --steps": ["train", "--quick", "--out", str(tmp / "r6"),
                                              "--steps", "10", "--warmup", "50"],
        "cli: --sigma-max with --sde vp": ["train", "--quick", "--out", str(tmp / "r7"),
                                           "--sigma-max", "5"],
        "cli: --sigma-max with --sde subvp": ["train", "--quick", "--out", str(tmp / "r8"),
                                              "--sde", "subvp", "--sigma-max", "5"],
    }  # fmt: skip


def _run_cases(tmp: Path) -> dict:
    """Issue 25's CLI cases on a real run: writers into its folder, a second trainer,
    an advise that can measure nothing."""
    run = tmp / "run25"
    subprocess.run([sys.executable, "-m", "sdegen_cli", "train", "--quick", "--out", str(run),
                    "--no-progress"], check=True, capture_output=True)  # fmt: skip
    newest = sorted((run / "checkpoints").glob("step_*.ckpt"))[-1]
    return {
        "cli: export --to the run's newest checkpoint": ["export", "--out", str(run), "--to",
                                                         str(newest)],
        "cli: export --to the run's config.json": ["export", "--out", str(run), "--to",
                                                   str(run / "config.json")],
        "cli: export --to the run's checkpoints/": ["export", "--out", str(run), "--to",
                                                    str(run / "checkpoints" / "m.sdegen")],
        "cli: advise --solvers tsit5 --nfe 5": ["advise", "--out", str(run), "--solvers",
                                                "tsit5", "--nfe", "5", "--no-progress"],
        "cli: train while another trains the run": ["train", "--quick", "--out", str(run)],
    }  # fmt: skip


_HOLD = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("owner", sys.argv[2])
owner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(owner)
owner.claim_run_folder(sys.argv[1])
print("owned", flush=True)
time.sleep(600)
"""


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
        run_cases = _run_cases(Path(tmp))
        run = Path(tmp) / "run25"
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        owner_py = str(Path(sg.__file__).parent / "_runs" / "_owner.py")
        for name, argv in run_cases.items():
            holder = None
            if "another trains" in name:  # a second, real process owns the folder
                holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run), owner_py],
                                          stdout=subprocess.PIPE, text=True)  # fmt: skip
                holder.stdout.readline()
            try:
                results[name] = classify_cli(argv)
            finally:
                if holder is not None:
                    holder.kill()
                    holder.wait()
                    holder.stdout.close()
        changed = [str(p) for p, b in before.items()
                   if p.name != ".sdegen-owner" and (not p.is_file() or p.read_bytes() != b)]
        print(f"data loss: {len(changed)} run files changed or removed by the cases above"
              + (f": {changed}" if changed else ""))  # fmt: skip
    counts = {k: sum(v[0] == k for v in results.values()) for k in ("clear", "unclear", "silent")}
    print(f"{len(results)} bad inputs: {counts['clear']} clear errors, "
          f"{counts['unclear']} unclear, {counts['silent']} silent")
    for name, (kind, msg) in results.items():
        if kind != "clear" or "-v" in sys.argv:
            print(f"  [{kind}] {name}: {msg}")


if __name__ == "__main__":
    main()


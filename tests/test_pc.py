"""Predictor–corrector sampling against the exact 8-Gaussian mixture."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import eight_gaussians, moment_errors


class IsoMixtureScore(eqx.Module):
    """Exact score of a mixture of isotropic Gaussians (all of variance `var0`) diffused
    by `sde`: a cheap closed form of `GaussianMixture.score(sde)` for the 2-D tests
    (checked against it in `test_iso_score_is_exact`)."""

    means: jax.Array
    var0: float
    logw: jax.Array
    sde: object

    def __call__(self, t, x):
        a, s2 = self.sde.alpha(t), self.sde.sigma(t) ** 2
        v = a**2 * self.var0 + s2
        d = a * self.means - x[None, :]
        r = jax.nn.softmax(self.logw - jnp.sum(d**2, -1) / (2 * v))
        return (r @ d) / v


def iso_score(gmm, sde):
    return IsoMixtureScore(gmm.means, float(gmm.covs[0, 0, 0]), jnp.log(gmm.weights), sde)


def mode_spread(gmm, x):
    """Mean squared distance to the nearest component mean; exactly d * std^2 = 0.18
    for the 8 Gaussians (up to the negligible overlap of the components)."""
    d2 = jnp.min(jnp.sum((x[:, None] - gmm.means[None]) ** 2, -1), -1)
    return float(jnp.mean(d2))


# Tolerances for n = 1000 samples (Monte-Carlo std in brackets): mean 0.3 (0.09),
# covariance 0.8 (about 0.25), component fractions 0.045 (0.0105); squared MMD (biased
# V-statistic) against 4000 exact samples 0.012, where exact samples give about 0.0067
# (measured in benchmarks/bench_samplers.py) and 10-step samplers 0.015 to 0.1.
N_SAMPLES = 1000
MEAN_TOL, COV_TOL, FRAC_TOL, MMD_TOL = 0.3, 0.8, 0.045, 0.012


def check_mixture(x, gmm):
    ref = gmm.sample(jr.key(1), 4000)
    e_mean, e_cov, e_frac = moment_errors(x, gmm)
    assert e_mean < MEAN_TOL and e_cov < COV_TOL and e_frac < FRAC_TOL, (
        e_mean, e_cov, e_frac)  # fmt: skip
    assert float(sg.metrics.mmd(x, ref)) < MMD_TOL


def batch(fn, n=N_SAMPLES, seed=3):
    return jax.jit(jax.vmap(fn))(jr.split(jr.key(seed), n))


def test_iso_score_is_exact():
    gmm = eight_gaussians()
    xs = 3 * jr.normal(jr.key(0), (6, 2))
    for sde in (sg.VPSDE(), sg.VESDE(0.01, 20.0)):
        exact, fast = gmm.score(sde), iso_score(gmm, sde)
        for t in (1e-3, 0.3, 1.0):
            np.testing.assert_allclose(
                jax.vmap(lambda x: fast(t, x))(xs),
                jax.vmap(lambda x: exact(t, x))(xs),
                rtol=1e-10,
                atol=1e-12,
            )


def test_euler_predictor_equals_sample_sde():
    """With no corrector, the Euler–Maruyama predictor, the reverse-diffusion predictor
    (the reverse of the forward Euler discretisation) and sample_sde take the same
    steps on the same grid with the same noise."""
    gmm, sde = eight_gaussians(), sg.VPSDE()
    score = iso_score(gmm, sde)
    keys = jr.split(jr.key(0), 8)
    ref = jax.vmap(lambda k: sg.sample_sde(k, sde, score, (2,), num_steps=20))(keys)
    for pred in ("euler_maruyama", "reverse_diffusion", diffrax.Euler()):
        x = jax.vmap(
            lambda k: sg.pc_sample(k, sde, score, (2,), pred, "none", num_steps=20)
        )(keys)
        np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-9)


def test_corrector_earns_its_cost():
    """VE SDE, 10 reverse-diffusion steps: the predictor alone leaves the modes too
    wide; adding a Langevin corrector (3 steps per level) brings the spread to its
    exact value 0.18 and lowers the MMD. MC std of the spread is 0.006."""
    gmm, sde = eight_gaussians(), sg.VESDE(0.01, 20.0)
    score = iso_score(gmm, sde)
    ref = gmm.sample(jr.key(1), 4000)

    def run(corrector):
        return batch(lambda k: sg.pc_sample(
            k, sde, score, (2,), "reverse_diffusion", corrector, snr=0.5,
            corrector_steps=3, num_steps=10), n=4000)  # fmt: skip

    x_p, x_pc = run("none"), run("langevin")
    assert mode_spread(gmm, x_p) > 0.215
    assert abs(mode_spread(gmm, x_pc) - 0.18) < 0.02
    # MMD^2 of 4000 exact samples against `ref` is ~0.001 (its noise floor); over four
    # seeds the corrector took it from 0.0025-0.0039 to 0.0013-0.0015.
    assert float(sg.metrics.mmd(x_pc, ref)) < 0.8 * float(sg.metrics.mmd(x_p, ref))


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral", "heun"])
def test_pc_reproduces_mixture(sde_name, predictor):
    gmm = eight_gaussians()
    sde = sg.VPSDE() if sde_name == "vp" else sg.VESDE(0.01, 20.0)
    score = iso_score(gmm, sde)
    x = batch(lambda k: sg.pc_sample(k, sde, score, (2,), predictor, "langevin",
                                     num_steps=200))  # fmt: skip
    check_mixture(x, gmm)


@pytest.mark.slow
def test_corrector_only_reproduces_mixture():
    gmm, sde = eight_gaussians(), sg.VESDE(0.01, 20.0)
    score = iso_score(gmm, sde)
    x = batch(lambda k: sg.pc_sample(k, sde, score, (2,), None, "langevin", snr=0.5,
                                     corrector_steps=2, num_steps=200))  # fmt: skip
    check_mixture(x, gmm)


def test_trajectory_denoise_and_x_init():
    gmm, sde = eight_gaussians(), sg.VPSDE()
    score = iso_score(gmm, sde)
    key = jr.key(7)
    x_init = sde.prior_sample(jr.split(key)[0], (2,))
    x, traj = sg.pc_sample(key, sde, score, (2,), num_steps=15, return_trajectory=True)
    assert traj.shape == (16, 2)
    np.testing.assert_array_equal(traj[0], x_init)
    np.testing.assert_array_equal(traj[-1], x)
    x2 = sg.pc_sample(key, sde, score, (2,), num_steps=15, x_init=x_init)
    np.testing.assert_allclose(x2, x, rtol=0, atol=1e-12)
    xd = sg.pc_sample(key, sde, score, (2,), num_steps=15, denoise=True)
    t = 1e-3
    expected = (x + sde.sigma(t) ** 2 * score(t, x)) / sde.alpha(t)
    np.testing.assert_allclose(xd, expected, rtol=1e-10)


def test_ancestral_vp_step_is_ddpm():
    """One ancestral step from t0 to t1 is the DDPM step with
    beta = 1 - alpha(t0)^2 / alpha(t1)^2 on the VP SDE, and the SMLD step on the VE."""
    score = lambda t, x: -x * (1 + t)
    x = jnp.array([0.3, -1.2])
    t0, t1 = 0.6, 0.5
    us = jnp.array([-t0, -t1])
    path = sg.GridBrownianPath(us, jax.ShapeDtypeStruct((2,), x.dtype), jr.key(0))
    z = path.normal(us[0], 0)

    def step(sde):
        terms = sg.reverse_terms(sde, score, path, reversed_time="-u")
        return sg.Ancestral().step(terms, us[0], us[1], x, None, None, False)[0]

    sde = sg.VPSDE()
    beta = 1 - (sde.alpha(t0) / sde.alpha(t1)) ** 2
    expected = (x + beta * score(t0, x)) / jnp.sqrt(1 - beta) + jnp.sqrt(beta) * z
    np.testing.assert_allclose(step(sde), expected, rtol=1e-12)
    ve = sg.VESDE(0.01, 20.0)
    s0, s1 = ve.sigma(t0), ve.sigma(t1)
    expected = x + (s0**2 - s1**2) * score(t0, x) + jnp.sqrt(
        s1**2 * (s0**2 - s1**2) / s0**2
    ) * z
    np.testing.assert_allclose(step(ve), expected, rtol=1e-12)


def test_langevin_corrector_step_rules():
    """One corrector step with each rule, against the formula."""
    sde = sg.VESDE(0.01, 20.0)
    score = lambda t, x: -x / 4.0
    x = jnp.array([1.0, 2.0, -0.5])
    us = jnp.array([-0.5, -0.4])
    path = sg.GridBrownianPath(us, jax.ShapeDtypeStruct((3,), x.dtype), jr.key(3))
    terms = sg.reverse_terms(sde, score, path, reversed_time="-u")
    drift, noise = terms.terms[0].vector_field, terms.terms[1]
    z = path.normal(us[0], 16)
    t = 0.4
    s = score(t, x)
    for rule in ("sample", "gaussian"):
        corrector = sg.LangevinCorrector(0.2, 1, rule)
        out = corrector.correct(drift, noise, us[0], us[1], x, None)
        if rule == "sample":
            eps = 2 * (0.2 * jnp.linalg.norm(z) / jnp.linalg.norm(s)) ** 2
        else:
            eps = 2 * 0.2**2 * sde.sigma(t) ** 2
        np.testing.assert_allclose(out, x + eps * s + jnp.sqrt(2 * eps) * z, rtol=1e-12)


def test_pc_errors():
    gmm, sde = eight_gaussians(), sg.VPSDE()
    score = iso_score(gmm, sde)
    key = jr.key(0)
    with pytest.raises(ValueError, match="Unknown `predictor` 'foo'.*reverse_diffusion"):
        sg.pc_sample(key, sde, score, (2,), predictor="foo")
    with pytest.raises(ValueError, match="Unknown `predictor` 'tsit5'"):
        sg.pc_sample(key, sde, score, (2,), predictor="tsit5")
    with pytest.raises(ValueError, match="Unknown corrector 'ald' for `corrector`.*langevin, none"):
        sg.pc_sample(key, sde, score, (2,), corrector="ald")
    with pytest.raises(ValueError, match="nothing to do"):
        sg.pc_sample(key, sde, score, (2,), predictor=None, corrector="none")
    with pytest.raises(ValueError, match="`snr` must be finite and > 0"):
        sg.pc_sample(key, sde, score, (2,), snr=0.0)
    with pytest.raises(ValueError, match="`corrector_steps` must be a positive int"):
        sg.pc_sample(key, sde, score, (2,), corrector_steps=0)
    with pytest.raises(ValueError, match="`num_steps` must be a positive int"):
        sg.pc_sample(key, sde, score, (2,), num_steps=0)
    with pytest.raises(ValueError, match="`eps` must satisfy"):
        sg.pc_sample(key, sde, score, (2,), eps=1.5)
    with pytest.raises(ValueError, match="`x_init` must have shape"):
        sg.pc_sample(key, sde, score, (2,), x_init=jnp.zeros(3))
    with pytest.raises(ValueError, match="`x_init` contains non-finite"):
        sg.pc_sample(key, sde, score, (2,), x_init=jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="`step_rule`"):
        sg.LangevinCorrector(0.1, 1, "batch")

"""Samplers against exact answers: Gaussian mixtures have closed-form scores at every t."""

import re

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import SDES, eight_gaussians, mixture_3d, moment_errors


N = 2000
# Distance threshold: two independent draws of 2000 points from the 8-Gaussian mixture
# are at MMD ~0.003; correct samplers land at <= 0.005; a sampler with half the score
# (0.06-0.11), the wrong sign (1.3) or no score term (1.2) is far above.
MMD_THRESHOLD = 0.02
# Monte-Carlo tolerances for N = 2000 (about 4-5 standard errors): the 8-Gaussian
# mixture has per-axis std ~2.8 (mean SE 0.063), second-moment SE ~0.13 and component
# fraction SE 0.0074.
TOL = {"8g": (0.3, 0.65, 0.03), "3d": (0.15, 0.3, 0.035)}
MIXTURES = {"8g": eight_gaussians, "3d": mixture_3d}


def _draw(sampler, key, n=N):
    return jax.vmap(sampler)(jr.split(key, n))


def _check(samples, mixture, which, key):
    assert np.all(np.isfinite(samples))
    emean, ecov, eweight = moment_errors(samples, mixture)
    tm, tc, tw = TOL[which]
    assert emean < tm, emean
    assert ecov < tc, ecov
    assert eweight < tw, eweight
    ref = mixture.sample(key, samples.shape[0])
    assert float(sg.metrics.mmd(samples, ref)) < MMD_THRESHOLD


@pytest.mark.parametrize("which", sorted(MIXTURES))
@pytest.mark.parametrize("name", sorted(SDES))
def test_sample_sde_matches_mixture(name, which, getkey):
    sde, mixture = SDES[name](), MIXTURES[which]()
    score = mixture.score(sde)
    d = mixture.dim
    xs = _draw(
        lambda k: sg.sample_sde(k, sde, score, (d,), "euler_maruyama", num_steps=250),
        getkey(),
    )
    _check(xs, mixture, which, getkey())


@pytest.mark.parametrize("which", sorted(MIXTURES))
@pytest.mark.parametrize("name", sorted(SDES))
def test_sample_ode_matches_mixture(name, which, getkey):
    sde, mixture = SDES[name](), MIXTURES[which]()
    score = mixture.score(sde)
    d = mixture.dim
    xs = _draw(lambda k: sg.sample_ode(k, sde, score, (d,), rtol=1e-4, atol=1e-4), getkey())
    _check(xs, mixture, which, getkey())


@pytest.mark.parametrize(
    "wrong",
    [
        lambda s: (lambda t, x: -s(t, x)),  # drift with the wrong sign
        lambda s: (lambda t, x: jnp.zeros_like(x)),  # forward drift only
        lambda s: (lambda t, x: 0.5 * s(t, x)),  # the probability-flow drift in an SDE
    ],
)
def test_wrong_sampler_fails_threshold(wrong, getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = wrong(mixture.score(sde))
    xs = _draw(lambda k: sg.sample_sde(k, sde, score, (2,), num_steps=250), getkey())
    xs = jnp.where(jnp.isfinite(xs), xs, 1e6)
    assert float(sg.metrics.mmd(xs, mixture.sample(getkey(), N))) > MMD_THRESHOLD


def test_srk_solver_on_reverse_sde(getkey):
    """ShARK (space-time Lévy area) on the reverse process: correct samples. (diffrax's
    SRK solvers are wrong when run backwards in time; sdegen integrates forwards in
    u = T - t.)"""
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    xs = _draw(lambda k: sg.sample_sde(k, sde, score, (2,), "shark", num_steps=100), getkey())
    _check(xs, mixture, "8g", getkey())


def test_reverse_terms_both_time_conventions_agree():
    """Euler–Maruyama on reverse_terms in t (from T to eps) and in u = T - t (from 0 to
    T - eps) with the same Brownian path produce the same path, step for step."""
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    eps, n = 1e-3, 200
    key = jr.key(3)
    bm_u = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-6, shape=(2,), key=key)
    # Diffrax runs t from T down to eps as tau = -t forwards and negates the control,
    # so the path below makes its increments equal to those of bm_u in u = T - t.
    x0 = jnp.array([0.3, -0.7])
    sol_u = diffrax.diffeqsolve(
        sg.reverse_terms(sde, score, bm_u, reversed_time=True),
        diffrax.Euler(), 0.0, 1.0 - eps, (1.0 - eps) / n, x0,
    )  # fmt: skip

    class Flipped(diffrax.AbstractPath):
        @property
        def t0(self):
            return 0.0

        @property
        def t1(self):
            return 1.0

        def evaluate(self, t0, t1=None, left=True, use_levy=False):
            return -bm_u.evaluate(1.0 - t1, 1.0 - t0)

    sol_t = diffrax.diffeqsolve(
        sg.reverse_terms(sde, score, Flipped()),
        diffrax.Euler(), 1.0, eps, -(1.0 - eps) / n, x0,
    )  # fmt: skip
    assert np.allclose(sol_u.ys[-1], sol_t.ys[-1], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", sorted(sg.SOLVERS))
def test_every_named_solver_runs(name, getkey):
    # One compiled program per solver and kind (a jitted solve, not op-by-op).
    sde, mixture = sg.VESDE(sigma_max=20.0), eight_gaussians()
    score = mixture.score(sde)
    info = sg.SOLVERS[name]
    assert info.sde or info.ode, name
    if info.sde:
        x = jax.jit(lambda k: sg.sample_sde(k, sde, score, (2,), name, num_steps=8))(getkey())
        assert x.shape == (2,) and np.all(np.isfinite(x)), name
    if info.ode:
        x = jax.jit(lambda k: sg.sample_ode(k, sde, score, (2,), name, num_steps=8))(getkey())
        assert x.shape == (2,) and np.all(np.isfinite(x)), name


def test_solver_instance_accepted(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    key = getkey()
    a = sg.sample_sde(key, sde, mixture.score(sde), (2,), diffrax.Heun(), num_steps=30)
    b = sg.sample_sde(key, sde, mixture.score(sde), (2,), "heun", num_steps=30)
    assert np.array_equal(a, b)


def test_solver_lookup_errors():
    with pytest.raises(ValueError, match="Unknown solver 'rk99'.*euler_maruyama.*tsit5"):
        sg.solver("rk99")
    with pytest.raises(ValueError, match="Unknown ODE solver 'sra1'"):
        sg.solver("sra1", kind="ode")
    with pytest.raises(ValueError, match="Unknown SDE solver 'tsit5'"):
        sg.solver("tsit5", kind="sde")
    assert isinstance(sg.solver("Euler-Maruyama"), diffrax.Euler)
    with pytest.raises((ValueError, TypeError), match="solver|name"):
        sg.solver(3)


def test_same_key_same_sample_whatever_batch(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    keys = jr.split(getkey(), 8)
    f = lambda k: sg.sample_sde(k, sde, score, (2,), num_steps=50)
    big = jax.vmap(f)(keys)
    small = jax.vmap(f)(keys[:3])
    single = f(keys[5])
    assert np.allclose(big[:3], small, rtol=1e-6, atol=1e-6)
    assert np.allclose(big[5], single, rtol=1e-6, atol=1e-6)


def test_x_init_reproduces_default(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    key = getkey()
    x_init = sde.prior_sample(jr.split(key)[0], (2,))
    a = sg.sample_sde(key, sde, score, (2,), num_steps=40)
    b = sg.sample_sde(key, sde, score, (2,), num_steps=40, x_init=x_init)
    assert np.array_equal(a, b)
    c = sg.sample_ode(key, sde, score, (2,), num_steps=40, solver="heun")
    d = sg.sample_ode(key, sde, score, (2,), num_steps=40, solver="heun", x_init=x_init)
    assert np.array_equal(c, d)


@pytest.mark.parametrize("name", sorted(SDES))
def test_encode_decode_roundtrip(name, getkey):
    sde, mixture = SDES[name](), mixture_3d()
    score = mixture.score(sde)
    x0 = mixture.sample(getkey(), 16)
    z = jax.vmap(lambda x: sg.encode(sde, score, x, rtol=1e-7, atol=1e-7))(x0)
    back = jax.vmap(lambda x: sg.decode(sde, score, x, rtol=1e-7, atol=1e-7))(z)
    assert np.allclose(back, x0, atol=1e-4)
    # the latent is distributed roughly like the prior: a different scale than the data
    assert not np.allclose(z, x0, atol=1e-1)


def test_ode_is_deterministic_and_adaptive_fixed_agree(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    key = getkey()
    a = sg.sample_ode(key, sde, score, (2,), rtol=1e-8, atol=1e-8)
    b = sg.sample_ode(key, sde, score, (2,), solver="tsit5", num_steps=400)
    assert np.allclose(a, b, atol=1e-4)


def test_custom_grid_and_trajectory(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    ts = jnp.concatenate([jnp.linspace(1.0, 0.1, 20), jnp.geomspace(0.09, 1e-3, 30)])
    x, traj = sg.sample_sde(getkey(), sde, score, (2,), ts=ts, return_trajectory=True)
    assert traj.shape == (50, 2)
    assert np.array_equal(traj[-1], x)
    x, traj = sg.sample_ode(getkey(), sde, score, (2,), "heun", num_steps=10,
                            return_trajectory=True)  # fmt: skip
    assert traj.shape == (11, 2) and np.array_equal(traj[-1], x)


def test_adaptive_sde(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    xs = _draw(
        lambda k: sg.sample_sde(k, sde, score, (2,), "heun", num_steps=50, rtol=1e-2,
                                atol=1e-2),  # fmt: skip
        getkey(),
        n=1000,
    )
    assert np.all(np.isfinite(xs))
    ref = mixture.sample(getkey(), 1000)
    assert float(sg.metrics.mmd(xs, ref)) < MMD_THRESHOLD


def test_denoise_moves_towards_data(getkey):
    sde, mixture = sg.VESDE(sigma_max=20.0), eight_gaussians()
    score = mixture.score(sde)
    key = getkey()
    plain = sg.sample_sde(key, sde, score, (2,), num_steps=100, eps=0.2)
    den = sg.sample_sde(key, sde, score, (2,), num_steps=100, eps=0.2, denoise=True)
    expected = plain + sde.sigma(0.2) ** 2 * score(0.2, plain)
    assert np.allclose(den, expected, rtol=1e-10)


def test_bad_inputs(getkey):
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    key = getkey()
    with pytest.raises(ValueError, match="Unknown SDE solver 'nope'"):
        sg.sample_sde(key, sde, score, (2,), "nope")
    with pytest.raises(ValueError, match="Unknown SDE solver 'tsit5'"):
        sg.sample_sde(key, sde, score, (2,), "tsit5")
    with pytest.raises(ValueError, match="x_init.*shape \\(2,\\)"):
        sg.sample_sde(key, sde, score, (2,), x_init=jnp.zeros(3))
    with pytest.raises(ValueError, match="eps"):
        sg.sample_sde(key, sde, score, (2,), eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        sg.sample_ode(key, sde, score, (2,), eps=1.5)
    with pytest.raises(ValueError, match="non-finite"):
        sg.sample_sde(key, sde, score, (2,), x_init=jnp.array([jnp.nan, 0.0]))
    with pytest.raises(ValueError, match="non-finite"):
        sg.encode(sde, score, jnp.array([jnp.inf, 0.0]))
    with pytest.raises(ValueError, match="num_steps"):
        sg.sample_sde(key, sde, score, (2,), num_steps=0)
    with pytest.raises(ValueError, match="error estimate"):
        sg.sample_sde(key, sde, score, (2,), "euler_maruyama", rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="ts.*decreasing"):
        sg.sample_sde(key, sde, score, (2,), ts=jnp.array([0.1, 0.5]))
    # a wrong type: sdegen's own ValueError, or beartype's TypeError when the jaxtyping
    # import hook is on (as in this test suite); both name the argument
    with pytest.raises((ValueError, TypeError), match="sde"):
        sg.sample_sde(key, "vp", score, (2,))
    with pytest.raises((ValueError, TypeError), match="score"):
        sg.sample_ode(key, sde, None, (2,))
    with pytest.raises(ValueError, match="rtol"):
        sg.sample_ode(key, sde, score, (2,), rtol=-1.0)


def test_jit_and_grad_through_ode(getkey):
    """decode is differentiable (e.g. for latent optimisation) and jit-compatible."""
    sde, mixture = sg.VPSDE(), eight_gaussians()
    score = mixture.score(sde)
    z = jnp.array([0.2, -0.4])
    f = jax.jit(lambda z: jnp.sum(sg.decode(sde, score, z, "heun", num_steps=50) ** 2))
    g = jax.grad(f)(z)
    h = 1e-5
    fd = [(f(z + h * e) - f(z - h * e)) / (2 * h) for e in jnp.eye(2)]
    assert np.allclose(g, jnp.array(fd), rtol=1e-4, atol=1e-6)


def test_advise_reports_progress_time_left_and_compile_seconds(capsys, getkey):
    # One line per measurement: "[i/n, ... so far, about ... left]" and the sampling
    # and compilation seconds; each row keeps both, the table shows both.
    sde, mixture = sg.VPSDE(), mixture_3d()
    data = mixture.sample(getkey(), 200)
    advice = sg.advise(getkey(), sde, mixture.score(sde), data,
                       solvers=("euler_maruyama", "heun"), nfes=(1, 4),
                       num_samples=50, progress=True)  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    # heun takes 2 evaluations a step: NFE 1 is below one step and is skipped
    assert len(lines) == len(advice.rows) == 3
    for i, line in enumerate(lines, 1):
        assert line.startswith(f"advise [{i}/3, "), line
        assert "so far, about" in line and "left]" in line and "s compiling)" in line
    assert lines[-1].split("about ")[1].startswith("0 s left")
    assert all(r["compile_seconds"] > 0 and r["seconds"] > 0 for r in advice.rows)
    table_rows = advice.table().splitlines()[2:]
    assert len(table_rows) == 3
    assert all(re.search(r"\| \d+\.\d\d \(\+ \d+\.\d\) \|$", r) for r in table_rows)

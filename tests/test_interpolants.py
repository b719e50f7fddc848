"""Interpolants (flow matching) as SDEs: the straight and cosine paths, velocity models
and the one conversion table, sampling from t = T itself, the tunable-noise family and
path changes, all against the exact flows of a Gaussian mixture (float64)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
from sdegen._processes._conversions import KINDS, convert, rates
from sdegen.data import GaussianMixture


MIX = GaussianMixture(
    jnp.array([[1.0, -0.5], [-2.0, 1.0]]),
    jnp.stack([0.3 * jnp.eye(2), jnp.array([[0.5, 0.1], [0.1, 0.2]])]),
    jnp.array([0.3, 0.7]),
)
MEAN = MIX.weights @ MIX.means
SECOND = jnp.einsum(
    "k,kij->ij", MIX.weights, MIX.covs + jnp.einsum("ki,kj->kij", MIX.means, MIX.means)
)
PATHS = {
    "rectified": sg.RectifiedFlow(),
    "cosine": sg.CosineInterpolant(),
    "rectified_T2": sg.RectifiedFlow(T=2.0),
}
N = 4000
KEYS = jr.split(jr.PRNGKey(22), N)


def _z_scores(x):
    """z-scores of the sample's mean and second moments against the mixture's."""
    n = x.shape[0]
    zm = (x.mean(0) - MEAN) / (x.std(0) / np.sqrt(n))
    x2 = jnp.einsum("ni,nj->nij", x, x).reshape(n, -1)
    z2 = (x2.mean(0) - SECOND.reshape(-1)) / (x2.std(0) / np.sqrt(n))
    return np.abs(np.concatenate([zm, z2]))


# ---------------------------------------------------------------- the paths


@pytest.mark.parametrize("name", list(PATHS))
def test_closed_forms(name):
    sde = PATHS[name]
    T = jnp.asarray(sde.T)
    assert float(sde.alpha(T)) == 0.0  # exactly: cos(pi/2) would be 6e-17
    assert float(sde.sigma(T)) == 1.0 == sde.prior_std
    assert float(sde.alpha(0.0)) == 1.0 and float(sde.sigma(0.0)) == 0.0
    assert np.isneginf(sde._f(T)) and np.isposinf(sde._g2(T))  # infinite, not NaN
    ts = jnp.linspace(0.01, 0.99, 9) * sde.T
    # f = alpha'/alpha and g^2 = (sigma^2)' - 2 f sigma^2 from jax.jvp of alpha, sigma
    a, s, da, ds = jax.vmap(lambda t: rates(sde, t))(ts)
    np.testing.assert_allclose(jax.vmap(sde._f)(ts), da / a, rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(sde._g2)(ts), 2 * s * ds - 2 * da / a * s**2,
                               rtol=1e-12)  # fmt: skip
    lam = jax.vmap(sde._lambda)(ts)
    np.testing.assert_allclose(jax.vmap(sde._inverse_lambda)(lam), ts, rtol=1e-12)
    assert float(sde.inverse_lambda(-jnp.inf)) == pytest.approx(float(sde.T), rel=1e-15)


def test_custom_sde_accepts_alpha_T_zero():
    custom = sg.CustomSDE(lambda t: 1 - t, lambda t: t)
    rf = sg.RectifiedFlow()
    assert custom.prior_std == 1.0
    ts = jnp.linspace(0.05, 0.95, 7)
    for fn in ("_alpha", "_sigma", "_f", "_g2"):
        np.testing.assert_allclose(jax.vmap(getattr(custom, fn))(ts),
                                   jax.vmap(getattr(rf, fn))(ts), rtol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match="alpha"):
        sg.CustomSDE(lambda t: 0.5 - t, lambda t: t)  # alpha < 0 inside (0, T)


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_mixture_score_exact_at_every_t(name):
    sde = PATHS[name]
    score = MIX.score(sde)
    xs = jr.normal(jr.PRNGKey(1), (5, 2)) * 1.5
    for t in [0.0, 0.1, 0.5, 0.9, 0.999, 1.0]:
        # an independent computation: autodiff of log p_t (Cholesky, not eigh)
        ref = jax.vmap(jax.grad(MIX.marginal(sde, t).log_prob))(xs)
        got = jax.vmap(lambda x, t=t: score(t, x))(xs)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    got_T = jax.vmap(lambda x: score(1.0, x))(xs)
    np.testing.assert_allclose(got_T, -xs / sde.prior_std**2, rtol=1e-15)


# ---------------------------------------------------------------- conversions


def _exact_velocity(sde, t, x):
    """v = alpha' D + sigma' eps_hat with the exact posterior mean of the mixture."""
    a, s, da, ds = rates(sde, jnp.asarray(t))
    if float(a) == 0.0:
        d = MEAN
    else:
        d = (x + s**2 * MIX.score(sde)(t, x)) / a
    return da * d + ds * (x - a * d) / s


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_conversions_round_trip(name):
    sde = PATHS[name]
    x = jnp.array([0.3, -1.1])
    value = jnp.array([-0.7, 2.0])
    for t in [0.2, 0.6, 0.95]:
        t = jnp.asarray(t)
        for src in KINDS:
            for dst in KINDS:
                there = convert(sde, t, x, value, src, dst)
                back = convert(sde, t, x, there, dst, src)
                np.testing.assert_allclose(back, value, rtol=1e-10, err_msg=f"{src}->{dst}")


@pytest.mark.parametrize("name", ["rectified", "cosine", "rectified_T2"])
def test_velocity_of_exact_score(name):
    sde = PATHS[name]
    score = MIX.score(sde)
    v = eqx.filter_jit(sg.velocity(sde, score))
    x = jnp.array([0.7, -1.2])
    for t in [0.3, 0.8, 0.999]:
        np.testing.assert_allclose(v(t * sde.T, x), _exact_velocity(sde, t * sde.T, x),
                                   rtol=1e-9)  # fmt: skip
    # at T: the exact limit alpha' E[x0] + sigma' x/sigma (the velocity carries 1/T)
    np.testing.assert_allclose(v(sde.T, x), _exact_velocity(sde, sde.T, x), rtol=1e-12)
    if name.startswith("rectified"):
        np.testing.assert_allclose(v(sde.T, x), (x - MEAN) / sde.T, rtol=1e-12)


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_velocity_param(name):
    sde = PATHS[name]
    exact_v = sg.velocity(sde, MIX.score(sde))
    model = sg.nn.VelocityParam(lambda t, x: exact_v(t, x), sde)
    x = jnp.array([0.7, -1.2])
    ts = jnp.array([0.05, 0.5, 0.97, 1.0])

    @jax.jit
    def at(t):
        return (model(t, x), MIX.score(sde)(t, x), model.velocity(t, x), exact_v(t, x),
                model.denoise(t, x), model.eps(t, x))  # fmt: skip

    for t in ts:
        s_model, s_exact, v_model, v_exact, d, e = at(t)
        np.testing.assert_allclose(s_model, s_exact, rtol=1e-9)
        np.testing.assert_allclose(v_model, v_exact, rtol=1e-12)
    # data prediction at T without dividing by alpha: E[x0]; the noise there is x
    np.testing.assert_allclose(d, MEAN, rtol=1e-12)
    np.testing.assert_allclose(e, x, rtol=1e-12)
    # sg.velocity of a velocity model is its own prediction
    np.testing.assert_array_equal(sg.velocity(sde, model)(0.4, x), exact_v(0.4, x))


# ---------------------------------------------------------------- fixed steps, by hand


def _ref_velocity(sde, t, x):
    """The velocity by hand in float64: closed forms of alpha, sigma and their
    derivatives, the mixture's exact score; at T the exact limit."""
    T = sde.T
    if isinstance(sde, sg.RectifiedFlow):
        a, s, da, ds = (T - t) / T, t / T, -1 / T, 1 / T
    else:
        c = np.pi / (2 * T)
        a, s, da, ds = np.cos(c * t), np.sin(c * t), -c * np.sin(c * t), c * np.cos(c * t)
    if t == T:
        return da * np.asarray(MEAN) + ds * x / s
    sc = np.asarray(MIX.score(sde)(t, jnp.asarray(x)))
    d = (x + s**2 * sc) / a
    return da * d - ds * s * sc


@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_euler_heun_equal_hand_written_reference(name):
    sde = PATHS[name]
    ts = np.array([1.0, 0.93, 0.8, 0.62, 0.4, 0.21, 0.08, 0.01])
    x0 = np.array([0.4, -1.3])
    score = MIX.score(sde)
    for solver in ("euler", "heun"):  # num_steps: fixed steps on ts for heun too
        got = sg.sample_ode(jr.PRNGKey(0), sde, score, (2,), solver, ts=ts,
                            num_steps=len(ts) - 1, x_init=jnp.asarray(x0))  # fmt: skip
        x = x0.copy()
        for t0, t1 in zip(ts[:-1], ts[1:]):
            h = t1 - t0
            k1 = _ref_velocity(sde, t0, x)
            if solver == "euler":
                x = x + h * k1
            else:
                x = x + 0.5 * h * (k1 + _ref_velocity(sde, t1, x + h * k1))
        np.testing.assert_allclose(got, x, rtol=1e-12, atol=1e-13)


def test_log_likelihood_on_the_straight_path():
    sde = PATHS["rectified"]
    eps = 1e-3
    xs = MIX.sample(jr.PRNGKey(3), 3)
    exact = jax.vmap(MIX.marginal(sde, eps).log_prob)(xs)
    got = jnp.stack([sg.log_likelihood(sde, MIX.score(sde), x, eps=eps, rtol=1e-8,
                                       atol=1e-8)[0] for x in xs])  # fmt: skip
    np.testing.assert_allclose(got, exact, atol=1e-5)


# ---------------------------------------------------------------- sampling from T


@functools.cache
def _ode_sampler(name, solver, num_steps):
    sde = PATHS[name]
    return jax.jit(jax.vmap(lambda k: sg.sample_ode(
        k, sde, MIX.score(sde), (2,), solver, num_steps=num_steps, return_stats=True,
        throw=False)))  # fmt: skip


ODE_SOLVERS = [("euler", 200), ("heun", 40), ("tsit5", None), ("dpmpp_2m", 40)]


@pytest.mark.parametrize("solver,num_steps", ODE_SOLVERS)
@pytest.mark.parametrize("name", ["rectified", "cosine"])
def test_sample_ode_from_T(name, solver, num_steps):
    x, stats = _ode_sampler(name, solver, num_steps)(KEYS)
    assert bool(jnp.all(jnp.isfinite(x)))
    assert bool(jnp.all(stats.result == sg.RESULTS.successful))
    assert _z_scores(x).max() < 5


@pytest.mark.parametrize("name,eta", [("rectified", 0.0), ("rectified", 0.5),
                                      ("rectified", 1.0), ("rectified", 2.0),
                                      ("cosine", 0.0), ("cosine", 2.0)])  # fmt: skip
def test_sample_sde_noise_scale(name, eta):
    sde = PATHS[name]
    f = jax.jit(jax.vmap(lambda k: sg.sample_sde(k, sde, MIX.score(sde), (2,),
                                                 num_steps=400, noise_scale=eta)))
    x = f(KEYS)
    assert bool(jnp.all(jnp.isfinite(x)))
    assert _z_scores(x).max() < 5


_ODE_SWEEP = [("midpoint", 60), ("ralston", 60), ("ddim", 100), ("dpm_solver_2", 40),
              ("dpm_solver_3", 30), ("edm", 40), ("bosh3", 40), ("dopri5", 20)]
_SDE_SWEEP = [("heun", 200), ("euler_heun", 300), ("sra1", 200), ("shark", 200),
              ("sea", 300), ("ancestral", 200), ("dpmpp_2m_sde", 100), ("edm_sde", 100)]
# Each remaining fixed-step sampler once, the two paths taking turns (both paths meet
# every kind of step: the fast tests above run Euler, Heun, Tsit5, DPM-Solver++(2M)
# and Euler-Maruyama on each).
_SWEEP = [("ode", s, n, ("rectified", "cosine")[i % 2]) for i, (s, n) in enumerate(_ODE_SWEEP)]
_SWEEP += [("sde", s, n, ("cosine", "rectified")[i % 2]) for i, (s, n) in enumerate(_SDE_SWEEP)]


@pytest.mark.slow
@pytest.mark.parametrize("kind,solver,num_steps,name", _SWEEP)
def test_every_fixed_step_sampler_from_T(kind, solver, num_steps, name):
    sde = PATHS[name]
    sample = sg.sample_ode if kind == "ode" else sg.sample_sde
    x = jax.jit(jax.vmap(lambda k: sample(k, sde, MIX.score(sde), (2,), solver,
                                          num_steps=num_steps)))(KEYS)  # fmt: skip
    assert _z_scores(x).max() < 5, solver


def test_velocity_model_samples_without_the_score():
    sde = PATHS["rectified"]
    exact_v = sg.velocity(sde, MIX.score(sde))
    calls = []

    class Net:
        def __call__(self, t, x):
            calls.append(t)
            return exact_v(t, x)

    model = sg.nn.VelocityParam(Net(), sde)
    ts = jnp.linspace(1.0, 1e-3, 9)
    got = sg.sample_ode(jr.PRNGKey(0), sde, model, (2,), "euler", ts=ts)
    ref = sg.sample_ode(jr.PRNGKey(0), sde, MIX.score(sde), (2,), "euler", ts=ts)
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    # the ODE term of a velocity model integrates v itself: the network's output,
    # bit for bit (through the score it would be f x - g^2 s / 2, or at T the limit)
    drift = sg.ScoreDrift(sde, model, 0.5)
    x = jnp.array([0.3, 0.2])
    for t in [1.0, 0.5]:
        np.testing.assert_array_equal(drift(jnp.asarray(t), x, None), exact_v(t, x))
    np.testing.assert_allclose(drift.denoise(jnp.asarray(1.0), x), MEAN, rtol=1e-15)


def test_noise_scale_one_is_the_reverse_sde_and_checks():
    sde, score = sg.VPSDE(), MIX.score(sg.VPSDE())
    a = sg.sample_sde(jr.PRNGKey(5), sde, score, (2,), num_steps=20)
    b = sg.sample_sde(jr.PRNGKey(5), sde, score, (2,), num_steps=20, noise_scale=1.0)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="noise_scale"):
        sg.sample_sde(jr.PRNGKey(5), sde, score, (2,), num_steps=20, noise_scale=-1.0)
    with pytest.raises(ValueError, match="noise_scale"):
        sg.sample_sde(jr.PRNGKey(5), sde, score, (2,), "ancestral", num_steps=20,
                      noise_scale=0.5)  # fmt: skip


# ---------------------------------------------------------------- path changes


@pytest.mark.parametrize("to", ["rectified", "cosine"])
def test_change_sde_of_the_vp_score(to):
    vp, dst = sg.VPSDE(), PATHS[to]
    changed = sg.change_sde(MIX.score(vp), vp, dst)
    lam_T = float(vp.marginal_lambda(1.0))
    t_max = float(dst.inverse_lambda(lam_T))  # the overlap ends here
    xs = jr.normal(jr.PRNGKey(2), (4, 2)) * 1.5
    for t in np.linspace(0.01, t_max - 1e-9, 6):
        got = jax.vmap(lambda x, t=t: changed(t, x))(xs)
        ref = jax.vmap(lambda x, t=t: MIX.score(dst)(t, x))(xs)
        rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
        assert rel < 1e-5, (t, rel)
    with pytest.raises(Exception, match="change_sde"):
        changed(1.0, xs[0])
    clipped = sg.change_sde(MIX.score(vp), vp, dst, outside="clip")
    assert bool(jnp.all(jnp.isfinite(clipped(1.0, xs[0]))))
    # and back: a straight-path score on the VP SDE
    back = sg.change_sde(MIX.score(dst), dst, vp)
    np.testing.assert_allclose(back(0.5, xs[0]), MIX.score(vp)(0.5, xs[0]), rtol=1e-5)


# ---------------------------------------------------------------- guidance, inpainting


def test_guidance_and_inpainting_on_the_straight_path():
    sde = PATHS["rectified"]
    score = MIX.score(sde)
    guided = sg.classifier_guidance(score, lambda t, x: -0.5 * jnp.sum((x - 1.0) ** 2))
    x = sg.sample_ode(jr.PRNGKey(0), sde, guided, (2,), "heun", num_steps=20)
    assert bool(jnp.all(jnp.isfinite(x)))
    y = jnp.array([1.0, 0.0])
    mask = jnp.array([True, False])
    x = sg.inpaint(jr.PRNGKey(1), sde, score, y, mask, num_steps=50)
    assert bool(jnp.all(jnp.isfinite(x))) and float(x[0]) == 1.0

"""The one engine: every sampler is a solver run by the same loop, so every sampler

- raises a clear error (it says non-finite, names the sampler and the time) when the
  score turns NaN mid-solve — eagerly, under jit and under vmap;
- rejects a score whose output does not have the state's shape;
- gives the same sample for the same key whatever the batch size, the chunking or jit
  (the noise of step i comes from fold_in(key, i));
- reports its score evaluations (checked against a counting score).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg


SDE = sg.VPSDE()
T_BAD = 0.5  # the score returns NaN below this time


def good_score(t, x):
    return -x / (SDE.alpha(t) ** 2 * 0.25 + SDE.sigma(t) ** 2)


def nan_score(t, x):
    s = good_score(t, x)
    return jnp.where(t < T_BAD, jnp.nan, 1.0) * s


def eps_model(n, x):
    return 0.1 * x


def nan_eps_model(n, x):
    return jnp.where(n < 20, jnp.nan, 0.1) * x


LADDER = sg.sigma_ladder(8, 0.01, 10.0)

# Every sampler as `run(key, score_or_model)` for a state of shape (2,).
SAMPLERS = {
    "sample_sde/euler_maruyama": lambda k, s: sg.sample_sde(k, SDE, s, (2,), num_steps=40),
    "sample_sde/shark": lambda k, s: sg.sample_sde(k, SDE, s, (2,), "shark", num_steps=20),
    "sample_sde/ancestral": lambda k, s: sg.sample_sde(k, SDE, s, (2,), "ancestral",
                                                       num_steps=40),
    "sample_sde/dpmpp_2m_sde": lambda k, s: sg.sample_sde(k, SDE, s, (2,), "dpmpp_2m_sde",
                                                          num_steps=20),
    "sample_sde/edm_sde": lambda k, s: sg.sample_sde(k, SDE, s, (2,), "edm_sde",
                                                     num_steps=20),
    "sample_ode/heun": lambda k, s: sg.sample_ode(k, SDE, s, (2,), "heun", num_steps=20),
    "sample_ode/dpmpp_2m": lambda k, s: sg.sample_ode(k, SDE, s, (2,), "dpmpp_2m",
                                                      num_steps=20, grid="logsnr"),
    "sample_ode/ddim": lambda k, s: sg.sample_ode(k, SDE, s, (2,), "ddim", num_steps=20,
                                                  grid="karras"),
    "sample_ode/dpm_solver_3": lambda k, s: sg.sample_ode(k, SDE, s, (2,),
                                                          "dpm_solver_3", num_steps=8),
    "sample_ode/tsit5": lambda k, s: sg.sample_ode(k, SDE, s, (2,), "tsit5", rtol=1e-4,
                                                   atol=1e-4),
    "pc_sample": lambda k, s: sg.pc_sample(k, SDE, s, (2,), num_steps=20),
    "inpaint": lambda k, s: sg.inpaint(k, SDE, s, jnp.array([0.3, 0.0]),
                                       jnp.array([True, False]), num_steps=20),
    "annealed_langevin": lambda k, s: sg.annealed_langevin(
        k, lambda sig, x: s(jnp.minimum(sig, 1.0) / 10.0, x), LADDER, (2,),
        steps_per_level=3),
}  # fmt: skip
DISCRETE = {
    "ddim_sample": lambda k, m: sg.ddim_sample(k, m, sg.vp_alphas_cumprod(SDE, 100),
                                               (2,), num_steps=25),
    "ddpm_sample": lambda k, m: sg.ddpm_sample(k, m, sg.linear_beta_schedule(50), (2,)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nonfinite_score_is_a_clear_error(name):
    run = SAMPLERS[name]
    with pytest.raises(Exception, match="non-finite") as info:
        jax.block_until_ready(run(jr.key(0), nan_score))
    assert name.split("/")[0] in str(info.value)
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(jax.jit(jax.vmap(lambda k: run(k, nan_score)))(
            jr.split(jr.key(0), 3)))  # fmt: skip


def test_nonfinite_error_names_the_time():
    with pytest.raises(Exception, match=r"sample_sde \(solver 'euler_maruyama'\).*t ≈ 0\.4"):
        sg.sample_sde(jr.key(0), SDE, nan_score, (2,), num_steps=40)


@pytest.mark.parametrize("name", sorted(DISCRETE))
def test_nonfinite_eps_model_is_a_clear_error(name):
    with pytest.raises(Exception, match=f"{name}.*non-finite"):
        jax.block_until_ready(DISCRETE[name](jr.key(0), nan_eps_model))


def test_nonfinite_likelihood_is_a_clear_error():
    with pytest.raises(Exception, match="log_likelihood.*non-finite"):
        sg.log_likelihood(SDE, nan_score, jnp.array([0.1, 0.2]))
    with pytest.raises(Exception, match="non-finite"):
        jax.jit(lambda x: sg.log_likelihood(SDE, nan_score, x)[0])(jnp.array([0.1, 0.2]))


def test_throw_false_returns_the_result_code():
    x, stats = sg.sample_sde(jr.key(0), SDE, nan_score, (2,), num_steps=40, throw=False,
                             return_stats=True)  # fmt: skip
    assert stats.result == sg.RESULTS.nonfinite_state
    assert 0.38 < float(stats.t_failed) < 0.5
    assert not np.all(np.isfinite(np.asarray(x)))


@pytest.mark.parametrize("bad", ["scalar", "batched", "wrong"])
@pytest.mark.parametrize("name", ["sample_sde/euler_maruyama", "sample_ode/dpmpp_2m",
                                  "pc_sample", "sample_ode/tsit5"])  # fmt: skip
def test_score_output_shape_is_checked(name, bad):
    out = {"scalar": lambda t, x: jnp.sum(x), "batched": lambda t, x: x[None],
           "wrong": lambda t, x: x[:1]}[bad]  # fmt: skip
    with pytest.raises(ValueError, match=r"score\(t, x\)` must return an array of the "
                                         r"state's shape \(2,\)"):  # fmt: skip
        SAMPLERS[name](jr.key(0), out)


def test_eps_model_output_shape_is_checked():
    with pytest.raises(ValueError, match=r"eps_model\(n, x\)` must return an array"):
        DISCRETE["ddim_sample"](jr.key(0), lambda n, x: jnp.sum(x))


FIXED = sorted(n for n in SAMPLERS if n != "sample_ode/tsit5") + sorted(DISCRETE)


@pytest.mark.parametrize("name", FIXED)
def test_same_key_same_sample(name):
    """Across batch size, jit, and chunked sampling (sample_many)."""
    if name in DISCRETE:
        run = lambda k: DISCRETE[name](k, eps_model)
    else:
        run = lambda k: SAMPLERS[name](k, good_score)
    keys = jr.split(jr.key(3), 5)
    one = np.stack([np.asarray(run(k)) for k in keys[:2]])
    batch = np.asarray(jax.vmap(run)(keys))
    jitted = np.asarray(jax.jit(jax.vmap(run))(keys[:2]))
    many = np.asarray(sg.sample_many(jr.key(3), 5, run, chunk_size=2))
    np.testing.assert_allclose(batch[:2], one, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jitted, one, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(many, batch, rtol=1e-10, atol=1e-12)


class _Counting(eqx.Module):
    """A score that counts its evaluations at run time (through a host callback)."""

    def __call__(self, t, x):
        jax.debug.callback(_tick)
        return good_score(t, x)


_CALLS = [0]


def _tick():
    _CALLS[0] += 1


@pytest.mark.parametrize("name", ["sample_sde/euler_maruyama", "sample_sde/shark",
                                  "sample_ode/heun", "sample_ode/dpm_solver_3",
                                  "sample_ode/tsit5", "pc_sample", "annealed_langevin",
                                  "sample_sde/edm_sde"])  # fmt: skip
def test_nfe_counts_score_calls(name):
    _CALLS[0] = 0
    counting = _Counting()
    if name == "annealed_langevin":
        x, stats = sg.annealed_langevin(jr.key(0), lambda s, x: counting(0.5, x), LADDER,
                                        (2,), steps_per_level=7, return_stats=True)  # fmt: skip
    else:
        x, stats = _with_stats(name, counting)
    jax.block_until_ready(x)
    jax.effects_barrier()
    assert int(stats.nfe) == _CALLS[0]


def _with_stats(name, score):
    kind, _, solver = name.partition("/")
    if kind == "pc_sample":
        return sg.pc_sample(jr.key(0), SDE, score, (2,), num_steps=20, corrector_steps=2,
                            return_stats=True)  # fmt: skip
    if kind == "sample_sde":
        return sg.sample_sde(jr.key(0), SDE, score, (2,), solver, num_steps=20,
                             return_stats=True)  # fmt: skip
    if solver == "tsit5":
        return sg.sample_ode(jr.key(0), SDE, score, (2,), "tsit5", rtol=1e-4, atol=1e-4,
                             return_stats=True)  # fmt: skip
    return sg.sample_ode(jr.key(0), SDE, score, (2,), solver, num_steps=8,
                         return_stats=True)  # fmt: skip


def test_stats_print_values():
    _, stats = sg.sample_ode(jr.key(0), SDE, good_score, (2,), "dpmpp_2m", num_steps=5,
                             return_stats=True)  # fmt: skip
    text = str(stats)
    assert "nfe=5" in text and "num_steps=5" in text and "i32[" not in text
    assert "result='successful'" in text


def test_grid_brownian_path_increments():
    """Increments over the grid's steps: independent N(0, du) draws from fold_in(key, i)."""
    ts = jnp.linspace(0.0, 2.0, 5)
    path = sg.GridBrownianPath(ts, jax.ShapeDtypeStruct((20000,), jnp.float64), jr.key(0))
    incs = [path.evaluate(ts[i], ts[i + 1]) for i in range(4)]
    for w in incs:
        assert abs(float(jnp.std(w)) - np.sqrt(0.5)) < 0.02
    assert abs(float(jnp.mean(incs[0] * incs[1]))) < 0.02
    # the same step gives the same draw, from slightly perturbed times too
    np.testing.assert_allclose(path.evaluate(ts[1], ts[2]),
                               path.evaluate(ts[1] + 1e-12, ts[2]), rtol=1e-9)  # fmt: skip
    levy = sg.GridBrownianPath(ts, jax.ShapeDtypeStruct((3,), jnp.float64), jr.key(0),
                               diffrax.SpaceTimeLevyArea)  # fmt: skip
    inc = levy.evaluate(ts[0], ts[1], use_levy=True)
    assert isinstance(inc, diffrax.SpaceTimeLevyArea)


def test_equinox_error_setting_is_honoured():
    """The solve's one runtime check is a host callback by default; with
    `EQX_ON_ERROR=nan` it is equinox's check, which returns NaN instead of raising
    (a fresh process: equinox reads the setting at import)."""
    import os
    import subprocess
    import sys

    code = (
        "import jax, jax.numpy as jnp, jax.random as jr, numpy as np, sdegen as sg\n"
        "score = lambda t, x: jnp.where(t < 0.5, jnp.nan, 1.0) * -x\n"
        "f = jax.jit(jax.vmap(lambda k: sg.sample_ode(k, sg.VPSDE(), score, (2,), "
        "'euler', num_steps=4)))\n"
        "print(bool(np.all(np.isnan(np.asarray(f(jr.split(jr.key(0), 3)))))))\n"
    )
    env = {**os.environ, "EQX_ON_ERROR": "nan", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True"

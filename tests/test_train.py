"""The training loop: optimiser, EMA, exact resume, and learning a known score."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sdegen as sg


def _setup(width=16, depth=2):
    sde = sg.VPSDE()
    model = sg.nn.NoiseParam(sg.nn.MLP(2, width, depth, key=jr.key(1)), sde)

    def loss_fn(model, batch, key):
        return sg.dsm_loss(model, sde, batch, key)

    return sde, model, loss_fn


def _bits(tree):
    leaves = jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_array))
    return [np.asarray(x).tobytes() for x in leaves]


def test_make_optimizer_warmup_and_clip():
    cfg = sg.TrainConfig(lr=1.0, warmup=4, grad_clip=0.5)
    opt = sg.make_optimizer(cfg)
    params = {"w": jnp.zeros(3)}
    g = {"w": jnp.array([3.0, 4.0, 0.0])}  # norm 5, clipped to 0.5
    state = opt.init(params)
    ref = optax.adam(1.0)
    ref_state = ref.init(params)
    for k in range(6):
        upd, state = opt.update(g, state, params)
        clipped = jax.tree_util.tree_map(lambda x: x * 0.5 / 5.0, g)
        ref_upd, ref_state = ref.update(clipped, ref_state, params)
        scale = min(1.0, k / 4)  # linear warm-up from 0, then constant
        np.testing.assert_allclose(upd["w"], scale * ref_upd["w"], rtol=1e-12, atol=0)
    # Adam's first moment saw the clipped gradient: mu = (1 - 0.9^6) * g_clipped
    mu = state[1][0].mu["w"]
    np.testing.assert_allclose(mu, (1 - 0.9**6) * np.array([0.3, 0.4, 0.0]),
                               rtol=1e-12)  # fmt: skip
    wd = sg.make_optimizer(sg.TrainConfig(lr=0.1, warmup=0, grad_clip=None,
                                          weight_decay=0.5))  # fmt: skip
    upd, _ = wd.update({"w": jnp.zeros(3)}, wd.init(params), {"w": jnp.ones(3)})
    np.testing.assert_allclose(upd["w"], -0.1 * 0.5 * np.ones(3), rtol=1e-12)


def test_train_config_validation():
    with pytest.raises(ValueError, match="`lr` must be finite and > 0"):
        sg.TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="`ema_decay` must be in"):
        sg.TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1"):
        sg.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="`ckpt_every` must be an int >= 1 or None"):
        sg.TrainConfig(ckpt_every=0)
    cfg = sg.TrainConfig(num_steps=7, seed=3, grad_clip=None)
    assert sg.TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown TrainConfig fields"):
        sg.TrainConfig.from_dict({"steps": 3})


def test_ema_update_formula():
    model = eqx.nn.Linear(2, 2, key=jr.key(0))
    ema = jax.tree_util.tree_map(lambda x: x * 0 + 1.0, model)
    out = sg.ema_update(ema, model, 0.9)
    np.testing.assert_allclose(out.weight, 0.9 + 0.1 * model.weight, rtol=1e-12)
    np.testing.assert_allclose(out.bias, 0.9 + 0.1 * model.bias, rtol=1e-12)


def test_make_step_decreases_loss_and_keeps_batch():
    sde, model, loss_fn = _setup()
    cfg = sg.TrainConfig(lr=1e-2, warmup=0)
    opt = sg.make_optimizer(cfg)
    step = sg.make_step(loss_fn, opt, ema_decay=0.5)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    batch = sg.data.eight_gaussians_sampler(jr.key(0), 256)
    key = jr.key(1)
    ema = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True)
                                 if eqx.is_array(x) else x, model)  # fmt: skip
    first = float(loss_fn(model, batch, key))
    m = jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True)
                               if eqx.is_array(x) else x, model)  # fmt: skip
    for _ in range(30):
        m, ema, opt_state, loss = step(m, ema, opt_state, batch, key)
    # batch and key are not donated: still usable
    assert float(loss_fn(m, batch, key)) < 0.8 * first
    # EMA with decay 0.5 is close to (but not equal to) the weights
    w, e = m.net.layer_out.weight, ema.net.layer_out.weight
    assert not np.array_equal(np.asarray(w), np.asarray(e))
    assert float(jnp.max(jnp.abs(w - e))) < 0.05


class _Interrupt(Exception):
    pass


def test_resume_reproduces_uninterrupted_run(tmp_path):
    sde, model, loss_fn = _setup()
    data = sg.data.eight_gaussians_sampler(jr.key(0), 100)
    cfg = sg.TrainConfig(num_steps=12, batch_size=16, lr=1e-2, warmup=3,
                         ema_decay=0.9, log_every=2, ckpt_every=4, seed=7)  # fmt: skip
    full, hist = sg.train(model, loss_fn, data, cfg, progress=False)
    assert full.step == 12 and full.losses.shape == (12,)
    assert [r["step"] for r in hist["log"]] == [2, 4, 6, 8, 10, 12]

    def crash(state):
        if state.step == 6:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        sg.train(model, loss_fn, data, cfg, ckpt_dir=tmp_path, callback=crash,
                 progress=False)  # fmt: skip
    assert sg.latest_checkpoint(tmp_path).name == "step_000000004.ckpt"
    resumed, _ = sg.train(model, loss_fn, data, cfg, ckpt_dir=tmp_path, progress=False)
    assert resumed.step == 12
    assert _bits(resumed.model) == _bits(full.model)
    assert _bits(resumed.ema_model) == _bits(full.ema_model)
    assert _bits(resumed.opt_state) == _bits(full.opt_state)
    np.testing.assert_array_equal(resumed.losses, full.losses)
    # the caller's model is not consumed by buffer donation
    assert np.all(np.isfinite(np.asarray(model.net.layer_out.weight)))
    # a finished run resumes to itself; a longer run continues from it
    again, _ = sg.train(model, loss_fn, data, cfg, ckpt_dir=tmp_path, progress=False)
    assert again.step == 12 and _bits(again.model) == _bits(full.model)
    longer = sg.TrainConfig(**{**cfg.to_dict(), "num_steps": 14})
    more, _ = sg.train(model, loss_fn, data, longer, ckpt_dir=tmp_path, progress=False)
    ref, _ = sg.train(model, loss_fn, data, longer, progress=False)
    assert _bits(more.model) == _bits(ref.model)
    # changing a hyper-parameter that shapes the trajectory is refused
    other = sg.TrainConfig(**{**cfg.to_dict(), "lr": 2e-2})
    with pytest.raises(ValueError, match="hyper-parameters differ.*lr"):
        sg.train(model, loss_fn, data, other, ckpt_dir=tmp_path, progress=False)


def test_train_with_labels_and_eval(tmp_path):
    _, model, _ = _setup()
    x = jr.normal(jr.key(0), (40, 2))
    y = jnp.arange(40) % 2
    seen = []

    def loss_fn(model, batch, key):
        xb, yb = batch
        seen.append(yb.shape)
        return jnp.mean((jax.vmap(model)(jnp.full(xb.shape[0], 0.5), xb) - xb) ** 2)

    cfg = sg.TrainConfig(num_steps=6, batch_size=8, eval_every=3, ckpt_every=None,
                         log_every=3, keep_checkpoints=1)  # fmt: skip
    evals = []
    state, hist = sg.train(model, loss_fn, (x, y), cfg, ckpt_dir=tmp_path,
                           eval_fn=lambda s: evals.append(s.step) or {"n": s.step},
                           progress=False)  # fmt: skip
    assert seen[0] == (8,)
    assert evals == [3, 6] and hist["eval"] == [{"step": 3, "n": 3},
                                                {"step": 6, "n": 6}]  # fmt: skip
    assert [p.name for p in sorted(tmp_path.glob("*.ckpt"))] == ["step_000000006.ckpt"]
    assert (tmp_path / "hparams.json").is_file()
    with pytest.raises(ValueError, match="larger than the data set"):
        sg.train(model, loss_fn, (x, y), sg.TrainConfig(batch_size=41), progress=False)


def test_nonfinite_loss_is_reported():
    _, model, _ = _setup()
    cfg = sg.TrainConfig(num_steps=2, batch_size=4, log_every=1)
    bad = lambda m, b, k: jnp.sum(b) * jnp.nan
    with pytest.raises(FloatingPointError, match="non-finite.*step 1"):
        sg.train(model, bad, jnp.ones((8, 2)), cfg, progress=False)


@pytest.mark.slow
def test_learns_eight_gaussians_score():
    """A short run of an MLP on the 8-Gaussian mixture: the learned score is within
    25% relative L2 error of the exact score of p_t at t = 0.1, 0.5, 1.0 (measured on
    2000 samples of p_t), and ODE samples (Heun, 100 steps) have an MMD to the data of
    at most 3x the MMD between two independent data sets of the same size plus 0.003.
    """
    gmm = sg.data.eight_gaussians()
    sde = sg.VPSDE()
    model = sg.nn.NoiseParam(sg.nn.MLP(2, 128, 3, key=jr.key(0)), sde)
    cfg = sg.TrainConfig(num_steps=3000, batch_size=512, lr=3e-3, warmup=100,
                         ema_decay=0.99, log_every=500, ckpt_every=None)  # fmt: skip
    state, _ = sg.train(model, lambda m, b, k: sg.dsm_loss(m, sde, b, k),
                        sg.data.eight_gaussians_sampler, cfg, progress=False)  # fmt: skip
    learned = state.ema_model
    exact = gmm.score(sde)
    for i, t in enumerate((0.1, 0.5, 1.0)):
        x = gmm.marginal(sde, t).sample(jr.key(100 + i), 2000)
        s_hat = jax.vmap(lambda z: learned(t, z))(x)
        s = jax.vmap(lambda z: exact(t, z))(x)
        rel = float(jnp.sqrt(jnp.sum((s_hat - s) ** 2) / jnp.sum(s**2)))
        assert rel < 0.25, (t, rel)
    keys = jr.split(jr.key(5), 1000)
    samples = jax.vmap(lambda k: sg.sample_ode(k, sde, learned, (2,), "heun",
                                               num_steps=100))(keys)  # fmt: skip
    data = gmm.sample(jr.key(6), 1000)
    floor = float(sg.metrics.mmd(gmm.sample(jr.key(7), 1000), data))
    assert float(sg.metrics.mmd(samples, data)) < 3 * floor + 3e-3


def _copy(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )


def test_make_step_accepts_the_model_as_its_own_ema():
    # Reported bug: `step(model, model, ...)` failed with XLA's "Attempt to donate
    # the same buffer twice". Arrays shared between the donated arguments are now
    # copied first, so the result is that of separate buffers, bit for bit.
    _, model, loss_fn = _setup()
    opt = sg.make_optimizer(sg.TrainConfig(lr=1e-2, warmup=0))
    step = sg.make_step(loss_fn, opt, ema_decay=0.9)
    batch = sg.data.eight_gaussians_sampler(jr.key(0), 64)
    init = lambda m: opt.init(eqx.filter(m, eqx.is_inexact_array))
    m = _copy(model)
    ref = step(m, _copy(model), init(m), batch, jr.key(1))
    m = _copy(model)
    same = step(m, m, init(m), batch, jr.key(1))
    assert _bits(same) == _bits(ref)
    # Only one array shared between the model and the EMA.
    m = _copy(model)
    ema = eqx.tree_at(lambda t: t.net.layer_out.weight, _copy(model),
                      m.net.layer_out.weight)  # fmt: skip
    partly = step(m, ema, init(m), batch, jr.key(1))
    assert _bits(partly) == _bits(ref)
    # The step did train: the weights moved, and the EMA sits between.
    w0 = np.asarray(model.net.layer_out.weight)
    w1, e1 = np.asarray(same[0].net.layer_out.weight), np.asarray(
        same[1].net.layer_out.weight)  # fmt: skip
    assert np.max(np.abs(w1 - w0)) > 1e-4
    np.testing.assert_allclose(e1, 0.9 * w0 + 0.1 * w1, rtol=1e-12, atol=1e-15)


def test_train_on_a_one_device_mesh(tmp_path):
    # `mesh=` on one device: the sharded step follows the plain one (same global
    # batches and keys; float64 rounding only, 1e-12 against changes of ~1e-2), and
    # the run checkpoints and resumes as usual. Several devices are checked in
    # tests/test_distributed.py.
    _, model, loss_fn = _setup()
    data = sg.data.eight_gaussians_sampler(jr.key(0), 100)
    cfg = sg.TrainConfig(num_steps=4, batch_size=16, lr=1e-2, warmup=0, ema_decay=0.9,
                         log_every=2, ckpt_every=2, seed=5)  # fmt: skip
    mesh = sg.make_mesh(1)
    plain, _ = sg.train(model, loss_fn, data, cfg, progress=False)
    sharded, hist = sg.train(model, loss_fn, data, cfg, ckpt_dir=tmp_path, mesh=mesh,
                             progress=False)  # fmt: skip
    leaves = lambda s: [np.asarray(x) for x in jax.tree_util.tree_leaves(
        eqx.filter((s.model, s.ema_model, s.opt_state), eqx.is_array))]  # fmt: skip
    weights = lambda m: jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))
    moved = max(float(jnp.max(jnp.abs(a - b)))
                for a, b in zip(weights(plain.model), weights(model)))  # fmt: skip
    assert moved > 1e-3
    for a, b in zip(leaves(plain), leaves(sharded), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sharded.losses, plain.losses, rtol=0, atol=1e-12)
    assert [(r["step"], r["num_devices"]) for r in hist["log"]] == [(2, 1), (4, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "hparams.json", "step_000000002.ckpt", "step_000000004.ckpt"]  # fmt: skip
    # Resumed without a mesh from the mesh run's step-2 checkpoint.
    (tmp_path / "step_000000004.ckpt").unlink()
    resumed, _ = sg.train(model, loss_fn, data, cfg, ckpt_dir=tmp_path, progress=False)
    for a, b in zip(leaves(plain), leaves(resumed), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-12)

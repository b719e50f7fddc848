"""Draw the figures of the concept pages with sdegen itself.

Every figure uses the 8-Gaussian mixture of `sdegen.data.eight_gaussians`, whose
score and density are known exactly at every time, so the pictures show the
samplers and the theory rather than a trained network's error.

    .venv/bin/python docs/_static/make_figures.py            # all figures
    .venv/bin/python docs/_static/make_figures.py langevin   # only some

The PNGs go to docs/_static/figures/ (each well under 200 KB).
"""

import os
import sys


os.environ.setdefault("JAX_PLATFORMS", "cpu")

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt

import sdegen as sg


OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures")
DPI = 80
LIM = 6.5
N = 2000
GMM = sg.data.eight_gaussians()


def _grid(n=120, lim=LIM):
    g = jnp.linspace(-lim, lim, n)
    xx, yy = jnp.meshgrid(g, g)
    return xx, yy, jnp.stack([xx.ravel(), yy.ravel()], axis=-1)


def _density(ax, mixture, lim=LIM, cmap="Blues"):
    xx, yy, pts = _grid(lim=lim)
    logp = jax.vmap(mixture.log_prob)(pts).reshape(xx.shape)
    ax.contourf(xx, yy, jnp.exp(logp), levels=20, cmap=cmap)


def _scatter(ax, x, title, lim=LIM, color="C3"):
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.5, color=color, rasterized=True)
    _square(ax, title, lim)


def _square(ax, title, lim=LIM):
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def _save(fig, name):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB")


def fig_marginals():
    """p_t of the VP SDE at several t, with the exact score field on top."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    ts = [0.0, 0.2, 0.4, 1.0]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
    for ax, t in zip(axes, ts):
        _density(ax, GMM.marginal(sde, t))
        g = jnp.linspace(-LIM + 0.5, LIM - 0.5, 15)
        xx, yy = jnp.meshgrid(g, g)
        pts = jnp.stack([xx.ravel(), yy.ravel()], axis=-1)
        s = jax.vmap(lambda x: score(t, x))(pts)
        s = s / (1.0 + jnp.linalg.norm(s, axis=-1, keepdims=True))
        ax.quiver(pts[:, 0], pts[:, 1], s[:, 0], s[:, 1], color="k", alpha=0.6)
        _square(ax, f"$p_t$ and $\\nabla\\log p_t$, t = {t}")
    _save(fig, "marginals.png")


def fig_langevin():
    """Langevin with one small noise level versus annealed over a ladder, on the
    two-Gaussian mixture 0.2 N((-5, -5), I) + 0.8 N((5, 5), I) of Song & Ermon 2019."""
    mix = sg.data.GaussianMixture(
        jnp.array([[-5.0, -5.0], [5.0, 5.0]]),
        jnp.stack([jnp.eye(2), jnp.eye(2)]),
        jnp.array([0.2, 0.8]),
    )
    nc = mix.noise_conditional_score()
    keys = jr.split(jr.key(0), N)
    x_init = jr.uniform(jr.key(1), (N, 2), minval=-8.0, maxval=8.0)
    ladder = sg.sigma_ladder(10, sigma_min=0.1, sigma_max=10.0)

    def run(sigmas, steps):
        return jax.vmap(
            lambda k, x0: sg.annealed_langevin(
                k, nc, sigmas, (2,), steps_per_level=steps, step_lr=1e-2, x_init=x0
            )
        )(keys, x_init)

    plain = run(jnp.array([0.1]), 1000)
    annealed = run(ladder, 100)
    lim = 9.0
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    titles = [
        ("start: uniform on $[-8, 8]^2$", x_init, "C7"),
        ("Langevin, one σ = 0.1", plain, "C3"),
        ("annealed Langevin, 10 levels", annealed, "C3"),
    ]
    for ax, (title, x, color) in zip(axes, titles):
        _density(ax, mix, lim=lim)
        frac = sg.metrics.component_fractions(mix, x)
        _scatter(ax, x, f"{title}\nweights {frac[0]:.2f} / {frac[1]:.2f}", lim, color)
    axes[0].set_xlabel("true weights 0.20 / 0.80", fontsize=8)
    _save(fig, "langevin.png")


def fig_sdes():
    """alpha(t) and sigma(t) of the three SDEs, and forward paths in 1-D."""
    ts = jnp.linspace(0.0, 1.0, 200)
    sdes = {
        "VP": sg.VPSDE(),
        "sub-VP": sg.SubVPSDE(),
        "VE": sg.VESDE(sigma_min=0.01, sigma_max=10.0),
    }
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for i, (name, sde) in enumerate(sdes.items()):
        axes[0].plot(ts, jax.vmap(sde.alpha)(ts), color=f"C{i}", label=f"{name} α(t)")
        axes[0].plot(
            ts, jax.vmap(sde.sigma)(ts), "--", color=f"C{i}", label=f"{name} σ(t)"
        )
    axes[0].set_ylim(0, 2.0)
    axes[0].set_xlabel("t")
    axes[0].legend(fontsize=7, ncol=3)
    axes[0].set_title("mean coefficient α(t) and std σ(t)", fontsize=10)
    for ax, name in zip(axes[1:], ["VP", "VE"]):
        sde = sdes[name]
        x0 = jnp.array([-4.0, -1.0, 2.0, 4.0])
        n_paths = 12
        keys = jr.split(jr.key(3), n_paths)

        def path(key, x0=x0, sde=sde):
            brown = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(4,), key=key)
            terms = sg.forward_terms(sde, brown)
            sol = diffrax.diffeqsolve(
                terms,
                diffrax.Euler(),
                0.0,
                1.0,
                1e-2,
                x0,
                saveat=diffrax.SaveAt(ts=ts),
            )
            return sol.ys

        ys = jax.vmap(path)(keys)
        for j in range(4):
            for k in range(n_paths):
                ax.plot(ts, ys[k, :, j], color=f"C{j}", lw=0.6, alpha=0.6)
        ax.set_xlabel("t")
        ax.set_title(f"forward {name} SDE paths from four $x_0$", fontsize=10)
    _save(fig, "sdes.png")


def fig_reverse():
    """Reverse-SDE and probability-flow-ODE trajectories from the same prior draws."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    n = 60
    keys = jr.split(jr.key(4), n)
    _, tr_sde = jax.vmap(
        lambda k: sg.sample_sde(
            k, sde, score, (2,), num_steps=300, return_trajectory=True
        )
    )(keys)
    _, tr_ode = jax.vmap(
        lambda k: sg.sample_ode(
            k, sde, score, (2,), "heun", num_steps=100, return_trajectory=True
        )
    )(keys)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6))
    for ax, tr, title in [
        (axes[0], tr_sde, "reverse SDE (Euler–Maruyama)"),
        (axes[1], tr_ode, "probability-flow ODE (Heun)"),
    ]:
        _density(ax, GMM)
        for i in range(n):
            ax.plot(tr[i, :, 0], tr[i, :, 1], lw=0.5, color="C1", alpha=0.7)
        ax.scatter(tr[:, 0, 0], tr[:, 0, 1], s=6, color="k", zorder=3, label="$x_T$")
        ax.scatter(
            tr[:, -1, 0],
            tr[:, -1, 1],
            s=6,
            color="C3",
            zorder=3,
            label="$x_\\varepsilon$",
        )
        _square(ax, title)
    axes[0].legend(fontsize=7, loc="lower left")
    _save(fig, "reverse.png")


def fig_ddpm_ddim():
    """DDPM (1000 steps) versus DDIM with few steps, on the exact eps of the mixture."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    n_t = 1000
    eps_model = sg.vp_eps_model(score, sde, n_t)
    acp = sg.vp_alphas_cumprod(sde, n_t)
    betas = sg.vp_betas(sde, n_t)
    keys = jr.split(jr.key(5), N)
    ddpm = jax.vmap(lambda k: sg.ddpm_sample(k, eps_model, betas, (2,)))(keys)
    ddim10 = jax.vmap(lambda k: sg.ddim_sample(k, eps_model, acp, (2,), num_steps=10))(
        keys
    )
    ddim50 = jax.vmap(lambda k: sg.ddim_sample(k, eps_model, acp, (2,), num_steps=50))(
        keys
    )
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, x, title in [
        (axes[0], ddpm, "DDPM, 1000 steps"),
        (axes[1], ddim50, "DDIM η = 0, 50 steps"),
        (axes[2], ddim10, "DDIM η = 0, 10 steps"),
    ]:
        _density(ax, GMM)
        _scatter(ax, x, title)
    _save(fig, "ddpm_ddim.png")


def fig_pc():
    """Few-step sampling with and without a Langevin corrector."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    keys = jr.split(jr.key(6), N)
    kw = dict(num_steps=20)
    pred = jax.vmap(lambda k: sg.pc_sample(k, sde, score, (2,), corrector=None, **kw))(
        keys
    )
    pc = jax.vmap(lambda k: sg.pc_sample(k, sde, score, (2,), corrector_steps=2, **kw))(
        keys
    )
    ref = GMM.sample(jr.key(7), N)
    m_pred = float(sg.metrics.mmd(pred, ref))
    m_pc = float(sg.metrics.mmd(pc, ref))
    fig, axes = plt.subplots(1, 2, figsize=(6.5, 3.4))
    _density(axes[0], GMM)
    _scatter(axes[0], pred, f"predictor only, 20 steps\nMMD² = {m_pred:.4f}")
    _density(axes[1], GMM)
    _scatter(axes[1], pc, f"+ 2 Langevin corrector steps\nMMD² = {m_pc:.4f}")
    _save(fig, "pc.png")


def fig_likelihood():
    """log p_0 from the probability-flow ODE versus the exact mixture density."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    xs = jnp.stack([jnp.linspace(-6.0, 6.0, 61), jnp.zeros(61)], axis=-1)
    eps = 1e-5
    exact = jax.vmap(GMM.marginal(sde, eps).log_prob)(xs)
    ode = jax.vmap(lambda x: sg.log_likelihood(sde, score, x, eps=eps)[0])(xs)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(xs[:, 0], exact, color="k", lw=2, label="exact $\\log p_\\varepsilon(x)$")
    ax.plot(xs[:, 0], ode, "o", ms=3, color="C3", label="probability-flow ODE (tsit5)")
    ax.set_ylim(float(exact.min()) - 1, float(exact.max()) + 1)
    ax.set_xlabel("$x_1$ (with $x_2 = 0$)")
    ax.set_ylabel("log-density (nats)")
    err = float(jnp.max(jnp.abs(exact - ode)))
    ax.set_title(f"exact likelihood along a line; max |error| = {err:.1e}", fontsize=10)
    ax.legend(fontsize=8)
    _save(fig, "likelihood.png")


def fig_guidance():
    """Inpainting a coordinate, and the exact posterior, on the mixture."""
    sde = sg.VPSDE()
    score = GMM.score(sde)
    y = jnp.array([2.83, 0.0])
    mask = jnp.array([True, False])
    keys = jr.split(jr.key(8), N)
    inp = jax.vmap(lambda k: sg.inpaint(k, sde, score, y, mask, num_steps=500))(keys)
    post = sg.mixture_posterior(GMM, y, mask=mask, noise_std=0.0)
    post_score = sg.MixturePosteriorScore(post, sde)
    exact = jax.vmap(lambda k: sg.sample_sde(k, sde, post_score, (2,), num_steps=500))(
        keys
    )
    fig, axes = plt.subplots(1, 2, figsize=(6.5, 3.4))
    for ax, x, title in [
        (axes[0], inp, "inpaint: replacement sampler"),
        (axes[1], exact, "exact posterior score"),
    ]:
        _density(ax, GMM)
        ax.axvline(2.83, color="k", lw=0.8, ls="--")
        _scatter(ax, x, title)
    axes[0].set_xlabel("$x_1 = 2.83$ observed, $x_2$ sampled", fontsize=8)
    _save(fig, "guidance.png")


FIGURES = {
    "marginals": fig_marginals,
    "langevin": fig_langevin,
    "sdes": fig_sdes,
    "reverse": fig_reverse,
    "ddpm_ddim": fig_ddpm_ddim,
    "pc": fig_pc,
    "likelihood": fig_likelihood,
    "guidance": fig_guidance,
}


def main(names=()):
    for name in names or FIGURES:
        FIGURES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])

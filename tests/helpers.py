"""Problems with known answers, shared by the tests."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

import sdegen as sg


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8):
    return jax.tree_util.tree_all(
        jax.tree_util.tree_map(lambda a, b: jnp.allclose(a, b, rtol=rtol, atol=atol), x, y)
    )


@contextlib.contextmanager
def xla_optimizations():
    """Compile with XLA's optimisations inside the block (tests/conftest.py turns them
    off: most tests compile many small programs and run each briefly). For programs
    that run long, e.g. a training loop of thousands of steps."""
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


def eight_gaussians():
    """2-D: 8 equal Gaussians of std 0.3 on a circle of radius 4."""
    return sg.data.eight_gaussians()


def mixture_3d():
    """3-D: three components with full, correlated covariances and unequal weights."""
    means = np.array([[2.0, 0.0, -1.0], [-2.0, 1.5, 0.5], [0.0, -2.0, 2.0]])
    a = np.array([[0.5, 0.2, 0.0], [0.1, 0.4, 0.15], [0.0, -0.2, 0.3]])
    base = a @ a.T + 0.05 * np.eye(3)
    covs = np.stack([base, 0.5 * base + 0.1 * np.ones((3, 3)) * 0.3, np.diag([0.2, 0.3, 0.1])])
    covs = covs + 0.02 * np.eye(3)
    weights = np.array([0.5, 0.3, 0.2])
    return sg.data.GaussianMixture(jnp.asarray(means), jnp.asarray(covs), jnp.asarray(weights))


SDES = {
    "vp": lambda: sg.VPSDE(),
    "subvp": lambda: sg.SubVPSDE(),
    "ve": lambda: sg.VESDE(sigma_min=0.01, sigma_max=20.0),
}


def moment_errors(samples, mixture):
    """Errors of the sample mean, covariance and component fractions against the
    mixture's exact values (in NumPy: a few eager JAX ops per call would each compile)."""
    w, mu, cov = (np.asarray(a) for a in (mixture.weights, mixture.means, mixture.covs))
    samples = np.asarray(samples, np.float64)
    mean = np.sum(w[:, None] * mu, 0)
    second = np.sum(w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :]), 0)
    true_cov = second - mean[:, None] * mean[None, :]
    emp_mean = np.mean(samples, 0)
    emp_cov = np.cov(samples.T)
    frac = np.asarray(sg.metrics.component_fractions(mixture, samples))
    return (
        float(np.max(np.abs(emp_mean - mean))),
        float(np.max(np.abs(emp_cov - true_cov))),
        float(np.max(np.abs(frac - w))),
    )

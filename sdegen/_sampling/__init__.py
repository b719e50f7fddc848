"""The sampling entry points: `sample_sde`, `sample_ode`, `encode`/`decode`,
predictor-corrector, annealed Langevin, DDPM and DDIM, chunked many-sample maps, and
the sampler advisor.
May import: `_core`, `_processes`, `_engine`, `_likelihood`, `_runs`, `metrics`."""

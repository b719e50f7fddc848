"""Training: `train` and `make_step`, batches and data sources inside the compiled
loop, EMA, optax optimisers and schedules, and the score-matching losses
(`_losses/`).
May import: `_core`, `_processes`, `_engine`, `_runs`, `data`."""

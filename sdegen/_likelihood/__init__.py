"""Exact likelihood: log p_0(x) through the probability-flow ODE augmented with the
divergence (exact trace or Hutchinson), and bits/dim with dequantisation.
May import: `_core`, `_processes`, `_engine`."""

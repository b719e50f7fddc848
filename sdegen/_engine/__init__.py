"""The one sampling engine: the solver loop (`_integrate`, `_solve`), sdegen's solvers
(`_solvers/`), the name table of solvers, grids and weightings, time grids, Brownian
paths and projections.
May import: `_core`, `_processes`."""

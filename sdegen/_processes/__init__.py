"""The processes: the SDEs (VP, sub-VP, VE, EDM, custom and beta-defined), DDPM noise
schedules, and the diffrax terms of the forward, reverse and probability-flow
dynamics.
May import: `_core`."""

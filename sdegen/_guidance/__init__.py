"""Controllable generation: guided scores (classifier, classifier-free, DPS),
inpainting, colorization, linear inverse problems, and the noise-conditional
classifier.
May import: `_core`, `_processes`, `_engine`, `_sampling`."""

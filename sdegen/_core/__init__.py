"""The foundation: shared array types (`_custom_types`), small helpers (`_misc`) and
the argument checks, eager and staged under `jit` (`_checks`).
May import: nothing of sdegen."""

"""Files and runs: checkpoints, exported models, training logs and figures, and data
parallelism over devices and hosts (meshes, sharding, the main process's files).
May import: `_core`, `_processes`, `data`, `nn`."""

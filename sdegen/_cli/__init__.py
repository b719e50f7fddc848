"""The `sdegen` command line: the only place in sdegen that parses flags or reads run
configurations.

The flags are parsed by the top-level module `sdegen_cli` (standard library only, so
`sdegen --help` answers before JAX is imported); each command then runs from a module
here, with one job each:

    _errors.py          one-line errors naming the flag
    _devices.py         --devices and the multi-host flags
    _command.py         running a command: devices, then the command, errors as one line
    _run.py             the run folder: --out checks, stray temp files, config.json,
                        rebuilding a trained model
    _data.py            --dataset and its options -> training data + held-out set
    _config.py          flags + defaults -> config.json -> SDE, network, loss
    _sampling.py        --solver/--sampler/--grid/--sample-steps, --label/--guidance
    _progress.py        chunked work with a progress bar (compilation shown as such)
    _report.py          metrics, figures, .npy files, summaries
    _train_cmd.py       train, demo
    _sample_cmd.py      sample
    _edit_cmd.py        inpaint, colorize
    _likelihood_cmd.py  likelihood
    _export_cmd.py      export, solvers

`--devices N` (train, demo, sample, likelihood) runs data-parallel on the first `N`
devices (`0`: all of them; several hosts after `--coordinator`, `--num-processes`
and `--process-id`, or on a cluster that `jax.distributed` detects by itself).

May import: everything (the outer edge: every package, and the public `sdegen`).
"""

from sdegen_cli import build_parser as build_parser, main as main

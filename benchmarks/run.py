"""Run every benchmark in this folder and print their tables.

    python benchmarks/run.py            # all of them
    python benchmarks/run.py sample     # only bench_sample.py (names are substrings)

Each `bench_*.py` has a `main(argv)` that times sdegen against a baseline measured in
the same run (this machine is noisy, so only same-run ratios mean anything).
"""

import importlib
import pathlib
import sys


HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    wanted = sys.argv[1:]
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if wanted and not any(w in name for w in wanted):
            continue
        print(f"\n## {name}\n", flush=True)
        module = importlib.import_module(name)
        module.main([])


if __name__ == "__main__":
    main()

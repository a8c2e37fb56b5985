"""Speed figures on this device: `python scripts/benchmark.py COMMAND [options]` (COMMAND: see SUBCOMMANDS).

The one argparse tool among the scripts: sub-commands with --flags (see --help of each); the sub-command modules
live in scripts/benchmarks/ (importable because Python puts this script's folder on the path).
"""

from __future__ import annotations

import argparse
import importlib

from kdtalker.cli import guarded

SUBCOMMANDS = {
    "renderer": "benchmarks.renderer",
    "sampler": "benchmarks.sampler",
    "pipeline": "benchmarks.pipeline",
    "latency": "benchmarks.latency",
    "live": "benchmarks.live",
    "data": "benchmarks.data",
    "hop": "benchmarks.hop",
    "grid_sample": "benchmarks.grid_sample",
    "vad": "benchmarks.vad",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        modules[name] = module
        module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0]))
    args = parser.parse_args(argv)
    guarded(lambda: modules[args.command].run(args))


if __name__ == "__main__":
    main()

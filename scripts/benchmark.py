"""Print speed figures on the current device: `python scripts/benchmark.py {renderer,sampler,pipeline} [options]`."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from kdtalker.cli import guarded  # noqa: E402

SUBCOMMANDS = {
    "renderer": "benchmarks.renderer",
    "sampler": "benchmarks.sampler",
    "pipeline": "benchmarks.pipeline",
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

"""Command line: ``python -m diffunlearn <command> ...``.

Each sub-command lives next to the code it drives; this module only dispatches, so
importing it stays cheap (no torch import until a command runs).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, help). The module provides ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS = {
    "fid": ("diffunlearn.metrics.fid_cli", "Frechet Inception Distance between two image sets (pytorch-fid's shape)"),
    "is": ("diffunlearn.metrics.is_cli", "Inception Score of an image set"),
    "klom": ("diffunlearn.metrics.klom_cli", "KLOM per split from saved margins"),
    "config-doc": ("diffunlearn.config_cli", "Print the config reference (markdown) generated from the schema"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffunlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command whose module is not installed
            if exc.name != module_name:
                raise
            continue
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    if args.command not in modules:
        parser.error(f"command {args.command!r} is not available")
    try:
        return int(modules[args.command].run(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""The `probexec` command line: one module per group of commands, each adding its own
subcommands to the parser.

- `simulators.py`: `simulators`, `serve`, `simulate`, `prior` (running the simulators);
- `train.py`: `train`, `evaluate` (proposal networks);
- `posterior.py`: `posterior` (every engine, events files, stratified runs);
- `demo.py`: `demo`;
- `probexec.analytics.cli`: `analytics`;
- `common.py`: what several of them share.
"""

from __future__ import annotations

import argparse
import os
import sys

from probexec.cli import demo, posterior, simulators, train
from probexec.cli.common import strict_json

__all__ = ["build_parser", "main", "strict_json"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="probexec", description="Bayesian inference inside C++ simulators")
    sub = p.add_subparsers(dest="command", required=True)
    simulators.add_parsers(sub)
    train.add_parsers(sub)
    posterior.add_parsers(sub)
    from probexec.analytics.cli import add_parser as add_analytics_parser

    add_analytics_parser(sub)
    demo.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (`probexec simulators | head`): nothing left to say, and Python's
        # flush of stdout at exit must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyError as e:
        print(f"probexec: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except Exception as e:
        from probexec.errors import ProbexecError

        if isinstance(e, ProbexecError | FileNotFoundError | ValueError):
            print(f"probexec: {e}", file=sys.stderr)
            return 1
        raise

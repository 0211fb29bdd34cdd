"""`versatune`: build the parser from the command modules and dispatch.

Errors caused by input (bad config, data, model path) print one clear message and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from typing import Optional, Sequence

from ..errors import VersaTuneError
from .bench import add_parsers as add_bench_parsers
from .commands import QUIET_ENV
from .commands import add_parsers as add_product_parsers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versatune", description="VersaTune multi-domain SFT.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_product_parsers(sub)
    add_bench_parsers(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.contrib.logging import logging_redirect_tqdm  # after parsing: `--help` need not load it

    # A step of `versatune main` runs quiet: main prints one line per step with its result, so the
    # step's own INFO lines and result table would only repeat it. Warnings, errors and progress
    # bars (stderr) stay.
    quiet = os.environ.get(QUIET_ENV) == "1" and not args.verbose
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        with contextlib.ExitStack() as args.exit_stack:
            # Log lines go through tqdm.write, so a warning does not break a progress bar in two.
            args.exit_stack.enter_context(logging_redirect_tqdm())
            if quiet:
                args.exit_stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
            return args.handler(args)
    except VersaTuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _record_on_inherited_run(f"{type(exc).__name__}: {exc}")
        return 2
    except KeyboardInterrupt:
        print("interrupted: the newest checkpoint in the output folder is intact; resume with --resume", file=sys.stderr)
        return 130


def _record_on_inherited_run(message: str) -> None:
    if os.environ.get("MLFLOW_RUN_ID"):  # only under `mlflow run`: MLflow loads only then
        from ..integrations.mlflow.entrypoints import tag_inherited_run

        tag_inherited_run(message)


if __name__ == "__main__":
    sys.exit(main())

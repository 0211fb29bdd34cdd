"""`versatune` command line: probe, train, bench-loop.

Errors caused by input (bad config, data, model path) print one clear message and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .config import METHODS, MODES, available_presets, load_config
from .errors import VersaTuneError

log = logging.getLogger("versatune_mlops")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"experiment preset in projects/ ({', '.join(available_presets())})")
    parser.add_argument("--config", help="YAML config file (applied after the preset)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.learning_rate=2e-5 (repeatable)")
    parser.add_argument("--seed", type=int, help="training and probe seed")
    parser.add_argument("--output-dir", required=True, help="folder for results (created)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versatune", description="VersaTune multi-domain SFT.")
    sub = parser.add_subparsers(dest="command", required=True)

    probe = sub.add_parser("probe", help="detect the base model's knowledge distribution over domains")
    _common(probe)
    probe.add_argument("--num-samples", type=int, help="number of free generations (probe.num_samples)")

    train = sub.add_parser("train", help="multi-domain SFT with VersaTune or a baseline mixture")
    _common(train)
    train.add_argument("--method", choices=METHODS, help="mixture method (default versatune)")
    train.add_argument("--mode", choices=MODES, help="fostering (all domains) or expansion (grow --target)")
    train.add_argument("--target", help="target domain in expansion mode")
    train.add_argument("--max-steps", type=int, help="optimizer steps")
    train.add_argument("--prior-file", help="distribution.json from `versatune probe` (skips the probe)")
    train.add_argument("--resume", help="checkpoint folder, or an output folder to resume from its newest checkpoint")

    bench = sub.add_parser("bench-loop", help="tokens/s of the training loop vs a bare torch loop, side by side")
    bench.add_argument("--preset", default="tiny")
    bench.add_argument("--config")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bench.add_argument("--steps", type=int, default=30, help="measured steps per loop")
    bench.add_argument("--repeats", type=int, default=3, help="alternating repeats of each loop")
    bench.add_argument("-v", "--verbose", action="store_true")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise VersaTuneError(f"--set {item!r} must look like KEY=VALUE, e.g. --set train.max_steps=40.")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    mapping = {
        "seed": ["train.seed", "probe.seed"], "method": ["method.method"], "mode": ["method.mode"],
        "target": ["method.target"], "max_steps": ["train.max_steps"], "num_samples": ["probe.num_samples"],
    }
    for attribute, keys in mapping.items():
        value = getattr(args, attribute, None)
        if value is not None:
            overrides.update({key: value for key in keys})
    return overrides


def _prior_from_file(path: str) -> dict[str, float]:
    file = Path(path)
    if not file.is_file():
        raise VersaTuneError(f"--prior-file {path!r} does not exist. Pass the distribution.json written by `versatune probe`.")
    try:
        payload = json.loads(file.read_text())
        return dict(payload["distribution"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VersaTuneError(f"--prior-file {path!r} has no 'distribution' mapping ({exc}). "
                             f"Pass the distribution.json written by `versatune probe`.") from exc


def cmd_probe(args) -> int:
    from .checkpointing import write_json_atomic
    from .loop import prepare_inputs
    from .probe import run_probe

    config = load_config(args.preset, args.config, _overrides(args))
    inputs = prepare_inputs(config)
    result = run_probe(inputs.loaded.model, inputs.loaded.tokenizer, inputs.data, config.probe)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "distribution.json", result.to_json())
    print(f"Estimator held-out accuracy: {result.estimator_accuracy:.3f}")
    print("Knowledge distribution (from", result.num_samples, "generations):")
    for domain, p in result.distribution.items():
        print(f"  {domain:<12} {p:6.3f}")
    print(f"Wrote {out / 'distribution.json'}")
    return 0


def cmd_train(args) -> int:
    from .loop import train

    overrides = _overrides(args)
    if args.prior_file:
        overrides["method.prior"] = _prior_from_file(args.prior_file)
    config = load_config(args.preset, args.config, overrides)
    summary = train(config, args.output_dir, resume_from=args.resume)
    print(f"{'domain':<12} {'loss before':>12} {'loss after':>11} {'weight 0':>9} {'final w':>8}")
    for d in summary["domains"]:
        print(f"{d:<12} {summary['eval_loss_before'][d]:>12.4f} {summary['eval_loss_after'][d]:>11.4f} "
              f"{summary['initial_weights'][d]:>9.3f} {summary['final_weights'][d]:>8.3f}")
    after = summary["metrics_after"]
    print(f"mean loss {after['eval_loss/mean']:.4f}, worst {after['eval_loss/worst']:.4f}, "
          f"multi-domain score {after['score/multi_domain']:.4f}")
    print(f"{summary['tokens_trained']} tokens in {summary['wall_seconds']:.1f} s; wrote {Path(args.output_dir) / 'summary.json'}")
    return 0


def cmd_bench_loop(args) -> int:
    from .bench_loop import run_loop_benchmark

    config = load_config(args.preset, args.config, _overrides(args))
    result = run_loop_benchmark(config, steps=args.steps, repeats=args.repeats)
    print(f"model {result['model']}, batch {result['batch_size']}, bf16={result['bf16']}, "
          f"{result['steps']} steps x {result['repeats']} repeats, threads {result['threads']}")
    print(f"bare torch loop   : {result['bare_tokens_per_s']:9.1f} tokens/s (median)")
    print(f"versatune loop    : {result['loop_tokens_per_s']:9.1f} tokens/s (median)")
    print(f"ratio loop / bare : {result['ratio']:.3f}  (target >= 0.95)")
    return 0


COMMANDS = {"probe": cmd_probe, "train": cmd_train, "bench-loop": cmd_bench_loop}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        return COMMANDS[args.command](args)
    except VersaTuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the newest checkpoint in the output folder is intact; resume with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

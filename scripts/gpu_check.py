"""GPU check (run by scripts/gpu_check.sh on a CUDA machine): a short FSDP + bf16 + LoRA SmolLM2 run on
every visible GPU through Ray, against the CPU path; prints tokens/s, peak GPU memory and MFU.

Both runs start from the same fixed prior (no probe: generation on GPU and CPU samples differently),
so the domain-weight trajectories must agree up to bf16 rounding; the gap is printed next to how far
the weights moved, so the tolerance can be judged. Exit status 1 when the gap is over tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from versatune_mlops.config import load_config
from versatune_mlops.integrations.ray.distributed import train_distributed
from versatune_mlops.training.loop import train
from versatune_mlops.training.models import count_parameters, load_model

PRIOR = {"law": 0.3, "medicine": 0.1, "finance": 0.2, "science": 0.1, "code": 0.2, "general": 0.1}
# Dense bf16 peak FLOP/s per GPU (vendor datasheets, SXM parts), matched on the device name.
PEAK_BF16 = [("H200", 989e12), ("H100", 989e12), ("H800", 989e12), ("GH200", 989e12), ("B200", 2250e12),
             ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12),
             ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12)]


def peak_flops(name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next((flops for key, flops in PEAK_BF16 if key in name), None)


def weight_gap(a: dict, b: dict) -> float:
    return max(abs(p["weights"][d] - q["weights"][d])
               for p, q in zip(a["weight_trajectory"], b["weight_trajectory"]) for d in p["weights"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--per-gpu-batch", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=5e-3, help="max domain-weight gap GPU vs CPU")
    parser.add_argument("--peak-tflops", type=float, help="per-GPU bf16 peak, when the device is not in the table")
    parser.add_argument("--output-dir", default="outputs/gpu-check")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print(f"gpu_check: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    overrides = {
        "model.lora": True, "model.bf16": True, "method.prior": PRIOR, "method.interval": args.interval,
        "train.max_steps": args.steps, "train.batch_size": args.per_gpu_batch * gpus,
        "train.micro_batch_size": args.micro_batch, "train.eval_accuracy": False, "train.save_model": False,
    }
    out = Path(args.output_dir)
    # FSDP shards across workers; a single GPU has nothing to shard across (NCCL refuses two ranks on
    # one device), so one GPU runs the same path unsharded.
    gpu_config = load_config("smollm2", overrides={**overrides, "distributed.num_workers": gpus,
                                                   "distributed.use_gpu": True, "distributed.strategy": "fsdp"})
    print(f"== GPU run: {gpus} x {name}, FSDP{' (1 worker: unsharded)' if gpus == 1 else ''} + bf16 + LoRA, "
          f"{args.steps} steps of {gpu_config.train.batch_size}", flush=True)
    gpu = train_distributed(gpu_config, out / "gpu")
    print("== CPU run: the same steps in one process on the CPU", flush=True)
    cpu_config = load_config("smollm2", overrides={**overrides, "model.device": "cpu"})
    cpu = train(cpu_config, out / "cpu")

    gap = weight_gap(gpu, cpu)
    moved = max(abs(cpu["final_weights"][d] - cpu["initial_weights"][d]) for d in cpu["domains"])
    tokens_per_s = gpu["tokens_trained"] / gpu["train_seconds"]
    trainable, total = count_parameters(load_model(cpu_config.model).model)
    # Model FLOPs per token: 6N for full fine-tuning; with LoRA the frozen weights get no weight
    # gradient, so forward 2N + input-gradient 2N = 4N (attention and the response-only head ignored).
    flops_per_token = (4 if cpu_config.model.lora else 6) * total
    peak = peak_flops(name, args.peak_tflops)
    mfu = flops_per_token * tokens_per_s / (gpus * peak) if peak else None
    report = {
        "gpus": gpus, "device": name, "tokens_trained": gpu["tokens_trained"],
        "tokens_equal": gpu["tokens_trained"] == cpu["tokens_trained"],
        "tokens_per_second": tokens_per_s, "tokens_per_second_cpu": cpu["tokens_trained"] / cpu["train_seconds"],
        "peak_gpu_memory_gib_rank0": (gpu["peak_gpu_memory_bytes"] or 0) / 2**30,
        "mfu": mfu, "parameters": total, "trainable_parameters": trainable,
        "weight_gap_gpu_vs_cpu": gap, "weights_moved": moved, "tolerance": args.tolerance,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(f"tokens/s        {tokens_per_s:,.0f} on {gpus} GPU(s) (CPU path: {report['tokens_per_second_cpu']:,.0f})")
    print(f"peak GPU memory {report['peak_gpu_memory_gib_rank0']:.2f} GiB (rank 0)")
    print(f"MFU             {f'{mfu:.1%}' if mfu is not None else 'unknown (pass --peak-tflops)'} "
          f"({flops_per_token / 1e9:.2f} GFLOP/token, {total / 1e6:.1f}M parameters)")
    print(f"weights         GPU vs CPU gap {gap:.2e} (tolerance {args.tolerance:g}; the weights moved {moved:.2e})")
    ok = gap <= args.tolerance and report["tokens_equal"]
    print("gpu_check: PASS" if ok else "gpu_check: FAIL", f"(report: {out / 'gpu_check.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

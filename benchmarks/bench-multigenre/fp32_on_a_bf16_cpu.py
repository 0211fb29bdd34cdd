"""Run the versatune CLI as on a CPU without bf16 instructions, so that it computes in fp32 while the
config (and so the benchmark's shared key and every run's reuse) stays as it is.

Seed 3 of this benchmark computes in fp32 (it started on an AVX2-only CPU); its later rows ran on an
AMX CPU through this wrapper so that they pair with the rest of seed 3:

    .venv/bin/python benchmarks/bench-multigenre/fp32_on_a_bf16_cpu.py bench ...the benchmark's arguments... --seeds 3

`--set model.bf16=false` would give the same arithmetic but a different config, hence a new benchmark.
The bench trains in-process, so patching torch's CPU probes here reaches every run.
"""
import sys

import torch.cpu

torch.cpu._is_avx512_bf16_supported = lambda: False
torch.cpu._is_amx_tile_supported = lambda: False

from versatune_mlops.cli import main  # noqa: E402  (after the patch, as the bench asks the probes lazily)

sys.exit(main())

"""Run the versatune CLI as on a CPU without bf16 instructions, so that it computes in fp32 while the
config (and so the benchmark's shared key and every run's reuse) stays as it is.

Seed 3 of this benchmark computes in fp32 (it started on an AVX2-only CPU); its later rows ran on an
AMX CPU through this wrapper so that they pair with the rest of seed 3:

    .venv/bin/python benchmarks/bench-multigenre/fp32_on_a_bf16_cpu.py bench ...the benchmark's arguments... --seeds 3

`--set model.bf16=false` would give the same arithmetic but a different config, hence a new benchmark.
The bench trains in-process, so answering the project's one CPU probe (`cpu_has_native_bf16`, which
`precision_on` asks for the autocast, the run summary and the base evaluation) reaches every run, as
the tests do it; torch's own private probes are left alone.
"""
import sys

from versatune_mlops.training import loss

loss.cpu_has_native_bf16 = lambda: False

from versatune_mlops.cli import main  # noqa: E402

sys.exit(main())

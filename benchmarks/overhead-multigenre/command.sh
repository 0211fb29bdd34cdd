# Run from the repository root after `make install`. The re-weighting overhead measured side by side in one
# command on one machine: a static mixture (VersaTune-constant, no mid-run evaluation), VersaTune re-weighting
# from held-out evaluations every 16 steps (method.signal=eval, the default) and from the window's training
# losses (method.signal=train), seed 1, the §7 budget. The report's "Overhead per dynamic row" table has the ratios.
.venv/bin/versatune bench --preset smollm2-multigenre --seeds 1 --methods versatune_constant,versatune --targets none \
  --max-steps 64 --set method.interval=16 --set train.eval_accuracy=false \
  --variant versatune_train_signal:method=versatune,signal=train \
  --output-dir benchmarks/overhead-multigenre --no-tracking

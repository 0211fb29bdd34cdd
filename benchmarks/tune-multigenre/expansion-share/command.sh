# Run from the repository root after `make install`. Chooses VersaTune expansion's target_initial_share on
# seed 0 (the tuning seed), target code, at the §7 budget; 100% code is the reference the kept gain and the
# degradation reduction are measured against. shared.json is the §7 benchmark's (same key: same probe and
# base evaluation). Rule fixed before running: the smallest share with kept >= 93% and degradation
# reduction >= 38.77% on seed 0; if none keeps 93%, the one that keeps most with reduction >= 38.77%.
# target_initial_share=0.5 was the default when this ran (the stored 100%-code run's config has it).
.venv/bin/versatune bench --preset smollm2-multigenre --seeds 0 --methods none --targets code --max-steps 64 \
  --set method.interval=16 --set train.eval_accuracy=false --set method.specialist_steps=64 --static-curves \
  --set method.target_initial_share=0.5 \
  --expansion-methods target_only \
  --expansion-variant versatune_share70:method=versatune,target_initial_share=0.7 \
  --expansion-variant versatune_share90:method=versatune,target_initial_share=0.9 \
  --output-dir benchmarks/tune-multigenre/expansion-share --no-tracking

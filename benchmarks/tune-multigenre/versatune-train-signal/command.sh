# Run from the repository root after `make install`; the sweep logs to a scratch MLflow store in /tmp.
# The VersaTune sweep on the training-loss signal (method.signal=train: no mid-run evaluation, the row
# that meets the overhead target), with TPE after 3 random trials and the share cap as a dimension.
# No baseline run: seed 0's uniform run is the versatune-cap sweep's baseline (same preset, seed and budget: 0.14199).
.venv/bin/versatune tune --preset smollm2-multigenre --searcher optuna --num-trials 8 --max-steps 64 \
  --prior-file benchmarks/tune-multigenre/distribution.json \
  --set method.method=versatune --set method.signal=train --set train.seed=0 --set train.eval_accuracy=false --set method.specialist_steps=64 \
  --set 'tune.alpha=[0,4]' --set 'tune.beta=[0,4]' --set 'tune.eta=[1,30]' --set 'tune.epsilon=[0,0.1]' \
  --set 'tune.interval=[16]' --set 'tune.max_domain_share=[0.2,0.25,0.3,null]' \
  --set tune.memory_per_trial_gb=20 --set tune.log_models=false --set tune.baseline=null \
  --tracking-uri sqlite:////tmp/versatune-tune/mlflow.db --experiment tune-multigenre --run-name tune-versatune-train-signal \
  --output-dir /tmp/versatune-tune/out-train-signal

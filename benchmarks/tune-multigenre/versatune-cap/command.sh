# Run from the repository root after `make install`; the sweep logs to a scratch MLflow store in /tmp.
# The VersaTune sweep again, with the share cap as a dimension and a uniform baseline run first.
# interval is fixed at 16: every interval-8 trial of the first sweep was stopped early, and 8 doubles the evaluation overhead.
.venv/bin/versatune tune --preset smollm2-multigenre --searcher optuna --num-trials 8 --max-steps 64 \
  --prior-file benchmarks/tune-multigenre/distribution.json \
  --set method.method=versatune --set train.seed=0 --set train.eval_accuracy=false --set method.specialist_steps=64 \
  --set 'tune.alpha=[0,4]' --set 'tune.beta=[0,4]' --set 'tune.eta=[1,30]' --set 'tune.epsilon=[0,0.1]' \
  --set 'tune.interval=[16]' --set 'tune.max_domain_share=[0.2,0.25,0.3,null]' \
  --set tune.memory_per_trial_gb=20 --set tune.log_models=false \
  --tracking-uri sqlite:////tmp/versatune-tune/mlflow.db --experiment tune-multigenre --run-name tune-versatune-cap \
  --output-dir /tmp/versatune-tune/out-cap

# Run from the repository root after `make install`; the sweep logs to a scratch MLflow store in /tmp.
.venv/bin/versatune tune --preset smollm2-multigenre --searcher optuna --num-trials 8 --max-steps 64 \
  --prior-file benchmarks/tune-multigenre/distribution.json \
  --set method.method=versatune --set train.seed=0 --set train.eval_accuracy=false --set method.specialist_steps=64 \
  --set 'tune.alpha=[0,4]' --set 'tune.beta=[0,4]' --set 'tune.eta=[1,30]' --set 'tune.epsilon=[0,0.1]' \
  --set 'tune.interval=[8,16]' --set tune.memory_per_trial_gb=20 --set tune.log_models=false \
  --tracking-uri sqlite:////tmp/versatune-tune/mlflow.db --experiment tune-multigenre --run-name tune-versatune \
  --output-dir /tmp/versatune-tune/out

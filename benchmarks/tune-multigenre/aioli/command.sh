# Run from the repository root after `make install`; the sweep logs to a scratch MLflow store in /tmp.
# No baseline run: seed 0's uniform run is the versatune-cap sweep's baseline (same preset, seed and budget: 0.14199).
# Resumable (one Aioli trial takes ~36 min here, so the 8 trials span sessions): each finished trial is
# appended to /tmp/versatune-tune/out-aioli/<sweep run id>/sweep_record.jsonl; copy that file over
# sweep_record.jsonl here (with the trial's summary as trial-<run id>.json) and rerun this command to
# continue. All 8 trials have run (the 8th with `--num-trials 4`: the version of `versatune tune` that ran it
# counted only finished trials towards the budget; since then ASHA-stopped trials count too, so rerunning
# this command now refuses with "nothing is left to run", and `--num-trials 12` would run 4 more).
# The committed record's first trial was written from trial-ea43377a….json, the trial of the first,
# interrupted sweep (before sweeps kept records); the 8th trial's line was appended from the last sweep's
# record, which (as that version did) carried only the finished trials.
.venv/bin/versatune tune --preset smollm2-multigenre --searcher optuna --num-trials 8 --max-steps 64 \
  --prior-file benchmarks/tune-multigenre/distribution.json \
  --set method.method=aioli --set method.interval=16 --set train.seed=0 --set train.eval_accuracy=false --set method.specialist_steps=64 \
  --set 'tune.alpha=[1,1]' --set 'tune.beta=[1,1]' --set 'tune.eta=[0.5,30]' --set 'tune.epsilon=[0,0]' \
  --set 'tune.interval=[16]' --set tune.memory_per_trial_gb=20 --set tune.log_models=false --set tune.baseline=null \
  --tracking-uri sqlite:////tmp/versatune-tune/mlflow.db --experiment tune-multigenre --run-name tune-aioli \
  --output-dir /tmp/versatune-tune/out-aioli \
  --resume-from benchmarks/tune-multigenre/aioli/sweep_record.jsonl

"""The `versatune` command: outputs on success; bad input gives a clear message, exit 2, nothing written."""

import json
import subprocess
import sys

import pytest

from versatune_mlops.cli import main

FAST = ["--set", "train.max_steps=6", "--set", "method.interval=3", "--set", "train.eval_accuracy=false",
        "--set", "probe.num_samples=8", "--set", "train.save_model=false", "--no-tracking"]


def test_probe_then_train_writes_the_documented_files(tmp_path, capsys):
    assert main(["probe", "--preset", "tiny", "--output-dir", str(tmp_path / "probe"), *FAST]) == 0
    distribution = json.loads((tmp_path / "probe" / "distribution.json").read_text())
    assert {"distribution", "num_samples", "estimator_accuracy"} <= set(distribution)
    assert distribution["num_samples"] == 8

    assert main(["train", "--preset", "tiny", "--prior-file", str(tmp_path / "probe" / "distribution.json"),
                 "--max-steps", "6", "--seed", "3", "--output-dir", str(tmp_path / "train"), *FAST]) == 0
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    for key in ("domains", "method", "initial_weights", "final_weights", "weight_trajectory", "eval_loss_before",
                "eval_loss_after", "tokens_trained", "wall_seconds"):
        assert key in summary
    assert summary["prior"] == pytest.approx(distribution["distribution"])
    assert summary["config"]["train"]["seed"] == 3
    assert not (tmp_path / "train" / "distribution.json").exists(), "the prior file replaces the probe"
    out = capsys.readouterr().out
    assert "loss before" in out and "multi-domain score" in out


def test_expansion_from_the_command_line(tmp_path):
    assert main(["train", "--preset", "tiny", "--method", "versatune", "--mode", "expansion", "--target", "code",
                 "--output-dir", str(tmp_path), *FAST]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "expansion" and summary["target"] == "code"
    # The default start is the default cap (.9): the target keeps its share, the replay is re-weighted.
    assert summary["initial_weights"]["code"] == pytest.approx(0.9)
    assert summary["final_weights"]["code"] == pytest.approx(0.9)


def _run_bad(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--preset", "nope"], "Unknown preset 'nope'"),
        (["--preset", "tiny", "--mode", "expansion", "--target", "poetry"], "Target domain 'poetry' is not a domain"),
        (["--preset", "tiny", "--set", "data.domains=[law, poetry]"], "poetry"),
        (["--preset", "tiny", "--set", "model.name=./no/such/model"], "Model path './no/such/model' does not exist"),
        (["--preset", "tiny", "--set", "train.max_length=12"], "shorter than the prompt template"),
        (["--preset", "tiny", "--set", "method.alpha=-3"], "method.alpha=-3.0 is out of range"),
        (["--preset", "tiny", "--set", "method.prior={law: .nan}"], "method.prior['law'] = nan"),
        (["--preset", "tiny", "--set", "method.prior={law: 1.0}"], "missing ['code', 'finance', 'general', 'medicine', 'science']"),
        (["--preset", "tiny", "--prior-file", "missing.json"], "--prior-file 'missing.json' does not exist"),
        (["--preset", "tiny", "--resume", "nowhere"], "not a checkpoint folder"),
    ],
)
def test_bad_train_input(tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    code, err = _run_bad(["train", "--output-dir", str(out), *extra], capsys)
    assert code == 2
    assert fragment in err
    assert not (out / "summary.json").exists() and not (out / "model").exists()


def test_bad_user_data(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "p", "response": "r", "domain": "law"}\n{"prompt": "p", "response"\n')
    code, err = _run_bad(["train", "--preset", "tiny", "--set", f"data.source={data}", "--set", "data.max_examples_per_domain=null",
                          "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and "data.jsonl line 2" in err


def test_unknown_method_is_rejected_by_the_parser(tmp_path):
    result = subprocess.run([sys.executable, "-m", "versatune_mlops.cli", "train", "--preset", "tiny", "--method", "magic",
                             "--output-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice: 'magic'" in result.stderr


def test_main_points_at_the_runs_page_and_the_model_in_the_training_view():
    from versatune_mlops.integrations.mlflow.entrypoints import ui_urls

    runs, model, command = ui_urls("http://host:5000/", "7", "versatune-tiny")
    assert runs == "http://host:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert model == "http://host:5000/#/models/versatune-tiny?workflowType=machine_learning"
    assert command is None
    runs, _, command = ui_urls("sqlite:////tmp/m.db", "7", "m")
    assert runs.startswith("http://127.0.0.1:5000/#/experiments/7/runs") and "sqlite:////tmp/m.db" in command

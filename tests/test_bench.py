"""`versatune bench`: the table arithmetic, the expansion baselines, the plan checks, and a quick run."""

import dataclasses
import json
import math

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from versatune_mlops.bench.methods import (EXPANSION_METHODS, FOSTERING_METHODS, REFERENCE_ABLATIONS, BenchPlan,
                                           BenchVariant, check_plan)
from versatune_mlops.bench.markdown import render_markdown
from versatune_mlops.bench.tables import (RunRecord, estimate, expansion_table, fostering_table, head_to_head,
                                          overhead_ratio)
from versatune_mlops.config import load_config
from versatune_mlops.errors import ConfigError
from versatune_mlops.mixing.strategies import build_strategy

DOMAINS = ["law", "medicine", "finance"]


def record(method, seed, after, *, mode="fostering", target=None, before=(2.0, 2.0, 2.0), seconds=10.0, midrun=0.0,
           precision=None):
    return RunRecord(mode=mode, method=method, seed=seed, domains=DOMAINS, target=target, precision=precision,
                     loss_before=dict(zip(DOMAINS, before)), loss_after=dict(zip(DOMAINS, after)),
                     accuracy_after={d: 0.25 for d in DOMAINS}, train_seconds=seconds, midrun_eval_seconds=midrun,
                     weight_trajectory=[{"step": 0, "weights": {d: 1 / 3 for d in DOMAINS}}])


def test_estimate_is_the_mean_with_a_student_t_interval():
    one = estimate([1.5])
    assert one.mean == 1.5 and one.half_width is None and one.n == 1
    three = estimate([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027, sd = 1, n = 3
    assert three.mean == pytest.approx(2.0) and three.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert estimate([float("nan")]).n == 0


def test_fostering_gain_over_uniform_is_paired_by_seed():
    records = [record("uniform", 0, (1.9, 1.9, 1.9)), record("uniform", 1, (1.8, 1.8, 1.8)),
               record("versatune", 0, (1.8, 1.9, 1.9)), record("versatune", 1, (1.7, 1.8, 1.8))]
    table = fostering_table(records)
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["uniform"]["gain_over_uniform"]["mean"] == pytest.approx(0.0)
    expected = [np.mean(np.exp(-np.array(v))) / np.exp(-u) - 1 for v, u in (((1.8, 1.9, 1.9), 1.9),
                                                                              ((1.7, 1.8, 1.8), 1.8))]
    assert rows["versatune"]["gain_over_uniform"]["mean"] == pytest.approx(np.mean(expected))
    # mean loss reduction: uniform 0.1 / 0.2 per seed, versatune 0.1333 / 0.2333
    assert rows["versatune"]["reduction_gain_over_uniform"]["mean"] == pytest.approx(
        np.mean([(0.4 / 3) / 0.1 - 1, (0.7 / 3) / 0.2 - 1]))
    assert rows["versatune"]["loss_change"]["law"]["mean"] == pytest.approx(-0.25)
    assert rows["versatune"]["worst_loss"]["mean"] == pytest.approx(1.85)
    markdown = render_markdown({"fostering": table})
    assert "| versatune | 2 |" in markdown and "| uniform | 2 |" in markdown


def test_a_variant_is_its_own_row_paired_with_uniform_by_seed():
    paper = [RunRecord.from_summary(_summary("versatune", seed, after), label="versatune_paper")
             for seed, after in ((0, (1.85, 1.9, 1.9)), (1, (1.75, 1.8, 1.8)))]
    assert paper[0].method == "versatune" and paper[0].row == "versatune_paper"
    records = [record("uniform", 0, (1.9, 1.9, 1.9)), record("uniform", 1, (1.8, 1.8, 1.8)),
               record("versatune", 0, (1.8, 1.9, 1.9)), record("versatune", 1, (1.7, 1.8, 1.8)), *paper]
    rows = {r["method"]: r for r in fostering_table(records)["rows"]}
    assert set(rows) == {"uniform", "versatune", "versatune_paper"}
    assert rows["versatune_paper"]["loss_change"]["law"]["mean"] == pytest.approx(-0.2)
    assert rows["versatune"]["loss_change"]["law"]["mean"] == pytest.approx(-0.25)
    expected = [np.mean(np.exp(-np.array(v))) / np.exp(-u) - 1 for v, u in (((1.85, 1.9, 1.9), 1.9),
                                                                              ((1.75, 1.8, 1.8), 1.8))]
    assert rows["versatune_paper"]["gain_over_uniform"]["mean"] == pytest.approx(np.mean(expected))
    # A label equal to the method is no variant.
    assert RunRecord.from_summary(_summary("uniform", 0, (1.9,) * 3), label="uniform").label is None


def _summary(method, seed, after, *, mode="fostering", target=None, midrun=(), steps=6, domains=DOMAINS):
    """A summary.json; ``midrun`` is ``(step, losses)`` at each re-weighting point."""
    return {"mode": mode, "method": method, "target": target, "config": {"train": {"seed": seed}}, "domains": domains,
            "eval_loss_before": {d: 2.0 for d in domains}, "eval_loss_after": dict(zip(domains, after)),
            "accuracy_before": {}, "accuracy_after": {}, "train_seconds": 1.0, "weight_trajectory": [],
            "steps": steps, "reweighting_records": [{"step": step, "eval_loss": dict(zip(domains, losses)),
                                                     "weights": {}} for step, losses in midrun]}


def _curve_report(*summaries):
    from versatune_mlops.bench.methods import build_report

    records = [RunRecord.from_summary(s) for s in summaries]
    return build_report(records, {d: 1 / 3 for d in DOMAINS}, BenchPlan(), load_config("tiny"))


def test_head_to_head_pairs_by_seed_and_says_which_rows_the_headline_beats():
    seeds = (0, 1, 2)
    mine = [record("tuned", s, (1.80 + 0.01 * s,) * 3) for s in seeds]
    # Clearly worse every seed; clearly better every seed; worse on two seeds, better on one.
    worse = [record("uniform", s, (1.90 + 0.01 * s,) * 3) for s in seeds]
    better = [record("oracle", s, (1.70 + 0.01 * s,) * 3) for s in seeds]
    mixed = [record("doremi", s, after) for s, after in zip(seeds, ((1.85,) * 3, (1.86,) * 3, (1.70,) * 3))]
    lone = [record("aioli", 1, (1.90,) * 3), record("aioli", 7, (1.0,) * 3)]  # seed 7: nothing to pair with
    duel = head_to_head([*mine, *worse, *better, *mixed, *lone], "tuned")

    rows = {r["method"]: r for r in duel["rows"]}
    assert duel["headline"] == "tuned" and set(rows) == {"uniform", "oracle", "doremi", "aioli"}
    assert rows["uniform"]["verdict"] == "beats" and rows["oracle"]["verdict"] == "loses"
    assert rows["doremi"]["verdict"] == "not separated"
    expected = np.mean([math.exp(-(1.80 + 0.01 * s)) / math.exp(-(1.90 + 0.01 * s)) - 1 for s in seeds])
    assert rows["uniform"]["gain"]["mean"] == pytest.approx(expected)
    assert rows["uniform"]["seeds"] == [0, 1, 2]
    assert rows["aioli"]["seeds"] == [1] and rows["aioli"]["verdict"] == "one seed: no interval"
    assert rows["aioli"]["gain"]["mean"] == pytest.approx(math.exp(-1.81) / math.exp(-1.90) - 1)

    markdown = render_markdown({"head_to_head": duel})
    assert "### Head to head: tuned vs every other row" in markdown
    assert "| uniform | 3 | +" in markdown and "| beats |" in markdown and "| oracle | 3 | -" in markdown
    assert head_to_head(worse, "tuned")["rows"] == []  # no headline runs: no table
    assert "Head to head" not in render_markdown({"head_to_head": head_to_head(worse, "tuned")})


def test_a_seed_whose_two_runs_computed_at_different_precisions_is_left_out_of_the_pair_and_listed():
    # Seed 2's uniform ran in bf16 on one machine, the tuned row in fp32 on another: their difference
    # would carry the precision offset, so it must not enter the paired interval.
    bf16, fp32 = "bfloat16", "float32"
    uniform = [record("uniform", 1, (1.90,) * 3, precision=bf16), record("uniform", 2, (1.95,) * 3, precision=bf16),
               record("uniform", 3, (1.92,) * 3, precision=fp32)]
    tuned = [record("tuned", 1, (1.89,) * 3, precision=bf16), record("tuned", 2, (1.80,) * 3, precision=fp32),
             record("tuned", 3, (1.91,) * 3, precision=fp32)]
    gains = [math.exp(-1.89) / math.exp(-1.90) - 1, math.exp(-1.91) / math.exp(-1.92) - 1]

    rows = {r["method"]: r for r in fostering_table([*uniform, *tuned])["rows"]}
    assert rows["tuned"]["gain_over_uniform"]["n"] == 2
    assert rows["tuned"]["gain_over_uniform"]["mean"] == pytest.approx(np.mean(gains))
    assert rows["tuned"]["left_out_of_pairing"] == {"2": "float32 vs bfloat16"}
    assert rows["tuned"]["precision"] == ["bfloat16", "float32"] and rows["uniform"]["left_out_of_pairing"] == {}

    duel = head_to_head([*uniform, *tuned], "tuned")["rows"][0]
    assert duel["seeds"] == [1, 3] and duel["gain"]["mean"] == pytest.approx(np.mean(gains))
    assert duel["left_out_of_pairing"] == {"2": "float32 vs bfloat16"}

    specialist = [record("target_only", 2, (1.5, 2.1, 2.1), mode="expansion", target="law", precision=bf16)]
    mixed = [record("versatune", 2, (1.6, 2.0, 2.0), mode="expansion", target="law", precision=fp32)]
    expansion = {r["method"]: r for r in expansion_table([*specialist, *mixed])["targets"][0]["rows"]}
    assert expansion["versatune"]["kept"]["n"] == 0 and expansion["versatune"]["left_out_of_pairing"] == {"2": "float32 vs bfloat16"}

    report = {"fostering": fostering_table([*uniform, *tuned]), "head_to_head": head_to_head([*uniform, *tuned], "tuned"),
              "expansion": expansion_table([*specialist, *mixed])}
    markdown = render_markdown(report)
    assert "Left out of the paired comparisons" in markdown
    assert "- tuned vs uniform: seed 2 (float32 vs bfloat16)" in markdown
    assert "- versatune vs target_only (expansion, target law): seed 2 (float32 vs bfloat16)" in markdown
    assert "Left out" not in render_markdown({"fostering": fostering_table(uniform)})


def test_a_summary_without_a_precision_field_computed_in_what_its_config_asked_for():
    from versatune_mlops.bench.tables import summary_precision

    old = _summary("uniform", 1, (1.9,) * 3)
    assert summary_precision(old) is None  # no config.model: unknown, paired with anything
    old["config"]["model"] = {"bf16": True}
    assert summary_precision(old) == "bfloat16" and RunRecord.from_summary(old).precision == "bfloat16"
    old["config"]["model"] = {"bf16": False}
    assert summary_precision(old) == "float32"
    assert summary_precision({**old, "precision": "float32", "config": {"model": {"bf16": True}}}) == "float32"


def test_each_run_is_measured_against_the_base_model_evaluated_in_its_own_precision():
    from versatune_mlops.bench.methods import base_evaluations, rebase_on_precision

    config = load_config("tiny", overrides={"model.bf16": True})
    bf16_base = {"eval_loss": {d: 2.0 for d in DOMAINS}, "accuracy": {}}
    fp32_base = {"eval_loss": {d: 2.01 for d in DOMAINS}, "accuracy": {"law": 0.3}}
    # A shared.json written before it recorded its precision holds what the config asked for: bf16.
    old = {"eval_loss": bf16_base["eval_loss"], "accuracy": {}}
    assert base_evaluations(old, config) == {"bfloat16": bf16_base}
    resumed = {**old, "base_by_precision": {"float32": fp32_base}}
    bases = base_evaluations(resumed, config)
    assert set(bases) == {"bfloat16", "float32"}
    assert base_evaluations({**old, "precision": "float32"}, config) == {"float32": bf16_base}

    fp32_run = rebase_on_precision(record("uniform", 3, (1.9,) * 3, precision="float32"), bases)
    assert fp32_run.loss_before == fp32_base["eval_loss"] and fp32_run.accuracy_before == {"law": 0.3}
    assert fp32_run.change("law") == pytest.approx(1.9 - 2.01)
    bf16_run = rebase_on_precision(record("uniform", 1, (1.9,) * 3, precision="bfloat16", before=(9, 9, 9)), bases)
    assert bf16_run.change("law") == pytest.approx(1.9 - 2.0)
    # A precision without a base evaluation keeps the summary's own "before".
    lone = rebase_on_precision(record("uniform", 1, (1.9,) * 3, precision="float16", before=(2.5,) * 3), bases)
    assert lone.change("law") == pytest.approx(1.9 - 2.5)


@pytest.mark.slow
def test_a_benchmark_resumed_on_a_machine_of_another_precision_evaluates_the_base_model_again(tmp_path, monkeypatch):
    """Seeds finished in bf16 on one machine, resumed on a CPU without bf16 instructions (fp32): the new
    runs' loss changes are measured from the base model evaluated in fp32, the old ones keep theirs."""
    from versatune_mlops.bench.methods import run_benchmark
    from versatune_mlops.training import loss as loss_module

    config = load_config("tiny", overrides={"train.max_steps": 2, "method.interval": 2, "train.eval_accuracy": False,
                                            "model.bf16": True, "probe.num_samples": 16})
    monkeypatch.setattr(loss_module, "cpu_has_native_bf16", lambda: True)
    run_benchmark(config, BenchPlan(seeds=[0], fostering_methods=["uniform"], targets=[]), tmp_path)
    shared = json.loads((tmp_path / "shared.json").read_text())
    assert shared["precision"] == "bfloat16" and "base_by_precision" not in shared

    monkeypatch.setattr(loss_module, "cpu_has_native_bf16", lambda: False)
    report = run_benchmark(config, BenchPlan(seeds=[0, 1], fostering_methods=["uniform"], targets=[]), tmp_path)
    shared = json.loads((tmp_path / "shared.json").read_text())
    fp32_base = shared["base_by_precision"]["float32"]["eval_loss"]
    assert set(fp32_base) == set(shared["eval_loss"])
    runs = {r["seed"]: r for r in report["runs"]}
    assert runs[0]["loss_before"] == shared["eval_loss"]  # the bf16 run keeps the bf16 base
    assert runs[1]["loss_before"] == fp32_base
    summary = json.loads((tmp_path / "runs" / "fostering-uniform-seed1" / "summary.json").read_text())
    assert summary["precision"] == "float32" and summary["eval_loss_before"] == fp32_base
    # Seed 1's uniform is paired with nothing of another precision here; the report still pairs by seed.
    assert report["fostering"]["rows"][0]["left_out_of_pairing"] == {}


def test_loss_curves_are_the_mean_and_range_over_seeds_at_every_evaluated_step():
    from versatune_mlops.bench.tables import loss_curves

    report = _curve_report(_summary("versatune", 0, (1.6, 1.7, 1.8), midrun=[(3, (1.8, 1.9, 1.9))]),
                           _summary("versatune", 1, (1.4, 1.7, 1.8), midrun=[(3, (1.9, 1.9, 1.9))]),
                           _summary("target_only", 0, (1.5, 2.1, 2.2), mode="expansion", target="law"))
    law = loss_curves(report["runs"])["versatune"]["law"]
    assert law.steps == [0, 3, 6]
    assert law.mean == pytest.approx([2.0, 1.85, 1.5])
    assert (law.low, law.high) == (pytest.approx([2.0, 1.8, 1.4]), pytest.approx([2.0, 1.9, 1.6]))
    assert set(loss_curves(report["runs"])) == {"versatune"}  # expansion runs have their own figure
    assert loss_curves(report["runs"], "expansion", "law")["target_only"]["law"].mean == pytest.approx([2.0, 1.5])


def test_a_static_run_without_midrun_evaluations_is_a_two_point_curve():
    from versatune_mlops.bench.tables import loss_curves

    report = _curve_report(_summary("uniform", 0, (1.9, 1.8, 1.7), steps=8))
    curve = loss_curves(report["runs"])["uniform"]["finance"]
    assert (curve.steps, curve.mean, curve.low, curve.high) == ([0, 8], [2.0, 1.7], [2.0, 1.7], [2.0, 1.7])


def test_report_only_draws_the_loss_curves_from_finished_runs(tmp_path):
    """No training: finished summaries in the folder become report.md and the loss-curve PNGs."""
    from versatune_mlops.bench.methods import _shared_key, plan_runs
    from versatune_mlops.cli import main

    config = load_config("tiny")
    domains = ["law", "medicine", "finance", "science", "code", "general"]
    shared = {"key": _shared_key(config), "prior": {d: 1 / 6 for d in domains}, "eval_loss": {d: 2.0 for d in domains},
              "accuracy": {}}
    (tmp_path / "shared.json").write_text(json.dumps(shared))
    plan = BenchPlan(seeds=[0, 1], fostering_methods=["uniform", "versatune"], expansion_methods=["target_only"],
                     targets=["code"])
    for run in plan_runs(config, plan, shared["prior"]):
        summary = _summary(run.config.method.method, run.config.train.seed, (1.9,) * 6, mode=run.config.method.mode,
                           target=run.config.method.target, midrun=[(3, (1.95,) * 6)], domains=domains)
        summary["config"] = run.config.to_dict()  # what makes the run reusable
        (tmp_path / "runs" / run.name).mkdir(parents=True)
        (tmp_path / "runs" / run.name / "summary.json").write_text(json.dumps(summary))
    assert main(["bench", "--preset", "tiny", "--report-only", "--no-tracking", "--seeds", "0,1",
                 "--methods", "uniform,versatune", "--targets", "code", "--expansion-methods", "target_only",
                 "--output-dir", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["missing_runs"] == []
    for name in ("report.md", "loss_curves.png", "loss_curves_expansion_code.png"):
        assert (tmp_path / name).stat().st_size > 0


def _stored_run(tmp_path, config_tree):
    folder = tmp_path / "runs" / "fostering-uniform-seed0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"score": 0.5, "config": config_tree}))
    return folder


def test_a_finished_run_is_reused_when_a_config_key_added_since_takes_its_default(tmp_path):
    from versatune_mlops.bench.methods import _reusable_summary

    config = load_config("tiny")
    stored = config.to_dict()
    del stored["method"]["reference"]  # as written before the key existed
    assert _reusable_summary(_stored_run(tmp_path, stored), config) == {"score": 0.5, "config": stored}


@pytest.mark.parametrize("change", ["value", "unknown_key"])
def test_a_finished_run_is_trained_again_when_its_config_differs_or_is_unreadable(tmp_path, change):
    from versatune_mlops.bench.methods import _reusable_summary

    config = load_config("tiny")
    stored = config.to_dict()
    if change == "value":
        stored["train"]["learning_rate"] = stored["train"]["learning_rate"] * 2
    else:
        stored["method"]["a_knob_since_removed"] = 1
    assert _reusable_summary(_stored_run(tmp_path, stored), config) is None


@pytest.mark.parametrize("mode", ["fostering", "expansion"])
def test_only_the_expansion_target_shares_a_run_reads_decide_whether_it_is_reused(tmp_path, mode):
    # The default target_initial_share moved from .5 to .9: finished fostering runs, which never read
    # it, stay reusable; an expansion run at another starting share is a different run.
    from versatune_mlops.bench.methods import _reusable_summary

    overrides = {"method.mode": "expansion", "method.target": "law"} if mode == "expansion" else {}
    config = load_config("tiny", overrides=overrides)
    stored = config.to_dict()
    stored["method"]["target_initial_share"] = 0.5
    stored["method"]["target_max_share"] = 0.8
    reused = _reusable_summary(_stored_run(tmp_path, stored), config)
    assert (reused is not None) == (mode == "fostering")


def test_expansion_kept_gain_and_degradation_reduction_are_relative_to_target_only():
    # Target law: the specialist gains 0.4 on law and degrades the others by 0.3 in sum.
    records = [record("target_only", 0, (1.6, 2.2, 2.1), mode="expansion", target="law"),
               record("versatune", 0, (1.64, 2.05, 2.05), mode="expansion", target="law")]
    rows = {r["method"]: r for r in expansion_table(records)["targets"][0]["rows"]}
    assert rows["target_only"]["kept"]["mean"] == pytest.approx(1.0)
    assert rows["versatune"]["target_gain"]["mean"] == pytest.approx(0.36)
    assert rows["versatune"]["kept"]["mean"] == pytest.approx(0.9)
    assert rows["versatune"]["non_target_change"]["mean"] == pytest.approx(0.1)
    assert rows["versatune"]["degradation_reduction"]["mean"] == pytest.approx(1 - 0.1 / 0.3)
    markdown = render_markdown({"expansion": expansion_table(records)})
    assert "| versatune | 1 | 0.3600 | 0.1000 | 0.1000 | 90.0% | +66.7% |" in markdown


def test_degradation_counts_only_the_domains_that_got_worse():
    # The specialist forgets medicine (+0.1) while finance improves more (-0.3): its net non-target change
    # is negative, yet it degrades medicine; the mixture degrades nothing.
    records = [record("target_only", 0, (1.6, 2.1, 1.7), mode="expansion", target="law"),
               record("versatune", 0, (1.7, 1.95, 1.9), mode="expansion", target="law")]
    rows = {r["method"]: r for r in expansion_table(records)["targets"][0]["rows"]}
    assert rows["target_only"]["non_target_change"]["mean"] == pytest.approx(-0.2)
    assert rows["target_only"]["non_target_degradation"]["mean"] == pytest.approx(0.1)
    assert rows["versatune"]["non_target_degradation"]["mean"] == pytest.approx(0.0)
    assert rows["versatune"]["degradation_reduction"]["mean"] == pytest.approx(1.0)


def test_overhead_ratio_counts_the_dynamic_methods_evaluations():
    records = [record("versatune", 0, (1.9,) * 3, seconds=100, midrun=8),
               record("versatune_constant", 0, (1.9,) * 3, seconds=100)]
    assert overhead_ratio(records)["ratio"] == pytest.approx(1.08)
    assert overhead_ratio(records)["within_run_ratio"] == pytest.approx(1.08)
    assert overhead_ratio(records[:1]) is None
    assert "interval_for_target" not in overhead_ratio(records)  # no step counts: no projection


def test_overhead_by_row_puts_each_rows_steps_and_evaluations_over_the_static_mixtures_steps_alone():
    from versatune_mlops.bench.tables import overhead_by_row

    bf16 = "bfloat16"
    static = [record("versatune_constant", seed, (1.9,) * 3, seconds=100, midrun=30, precision=bf16) for seed in (1, 2)]
    evaluating = [record("versatune", seed, (1.9,) * 3, seconds=100 + seed, midrun=35, precision=bf16)
                  for seed in (1, 2)]
    free = dataclasses.replace(record("versatune", 1, (1.9,) * 3, seconds=102, precision=bf16),
                               label="versatune_train_signal")
    other_precision = record("doremi", 1, (1.9,) * 3, seconds=100, midrun=10, precision="float32")
    unpaired = record("aioli", 7, (1.9,) * 3, seconds=100, midrun=10)
    rows = overhead_by_row([*static, *evaluating, free, other_precision, unpaired],
                           ["versatune", "versatune_train_signal", "doremi", "aioli"])
    # The static row's own mid-run evaluations (benchmark loss curves) are not part of its cost.
    assert [r["row"] for r in rows] == ["versatune", "versatune_train_signal"]
    assert rows[0]["ratio"] == pytest.approx(np.mean([136 / 100, 137 / 100])) and rows[0]["seeds"] == [1, 2]
    assert rows[1]["ratio"] == pytest.approx(1.02) and rows[1]["seeds"] == [1]
    assert "| versatune_train_signal | 1 | 1.02x | 0 |" in render_markdown({"overhead_by_row": rows})


def test_overhead_ratio_puts_each_seeds_dynamic_run_over_its_static_run_at_the_same_precision():
    # Seed 1 ran both in bf16 on a fast machine; seed 2's static run was resumed in fp32 on a slow one.
    records = [record("versatune", 1, (1.9,) * 3, seconds=100, midrun=10, precision="bfloat16"),
               record("versatune_constant", 1, (1.9,) * 3, seconds=100, precision="bfloat16"),
               record("versatune", 2, (1.9,) * 3, seconds=100, midrun=10, precision="bfloat16"),
               record("versatune_constant", 2, (1.9,) * 3, seconds=300, precision="float32")]
    overhead = overhead_ratio(records)
    assert overhead["seeds"] == [1]
    assert overhead["ratio"] == pytest.approx(1.10)
    assert "(seeds 1, each pair at one precision)" in render_markdown({"overhead": overhead})
    assert overhead_ratio(records[2:]) is None  # no seed ran both at one precision


def test_the_fostering_table_shows_the_base_model_of_each_precision_its_runs_were_measured_against():
    bf16 = record("uniform", 1, (1.9,) * 3, precision="bfloat16")
    fp32 = record("uniform", 3, (1.9,) * 3, before=(2.1, 2.1, 2.1), precision="float32")
    table = fostering_table([bf16, fp32])
    assert set(table["base_by_precision"]) == {"bfloat16", "float32"}
    assert table["base_by_precision"]["float32"]["loss"]["law"] == pytest.approx(2.1)
    markdown = render_markdown({"fostering": table})
    assert "Base model (bfloat16: the runs computed in it are measured against it)" in markdown
    assert "Base model (float32: the runs computed in it are measured against it)" in markdown
    one = render_markdown({"fostering": fostering_table([bf16])})
    assert "Base model: score" in one and "float32" not in one


def test_overhead_projects_the_interval_that_meets_the_target():
    # 40 steps of 2.5 s with 4 evaluation passes of 6 s: every K steps adds 6 / (2.5 K); <= 10% needs K >= 24.
    dynamic = record("versatune", 0, (1.9,) * 3, seconds=100, midrun=24)
    dynamic.steps, dynamic.reweighting_evaluations = 40, 4
    overhead = overhead_ratio([dynamic, record("versatune_constant", 0, (1.9,) * 3, seconds=100)])
    assert overhead["seconds_per_step"] == pytest.approx(2.5)
    assert overhead["seconds_per_evaluation"] == pytest.approx(6.0)
    assert overhead["interval_for_target"] == 24
    assert "re-weighting every 24 steps or more keeps the overhead within 10%" in render_markdown({"overhead": overhead})


def test_expansion_baselines_put_the_target_first():
    only = build_strategy("target_only", DOMAINS, mode="expansion", target="medicine")
    assert only.initial_weights().tolist() == [0.0, 1.0, 0.0]
    mixed = build_strategy("target_uniform", DOMAINS, mode="expansion", target="medicine", target_initial_share=0.6)
    assert mixed.initial_weights() == pytest.approx([0.2, 0.6, 0.2])
    with pytest.raises(ConfigError, match="expansion baseline"):
        build_strategy("target_only", DOMAINS)


@pytest.mark.parametrize("overrides, fragment", [
    ({"method.method": "target_only"}, "is an expansion baseline; pass --mode expansion --target DOMAIN"),
    ({"method.method": "doremi", "method.mode": "expansion", "method.target": "law"}, "does not support it"),
])
def test_expansion_methods_are_validated(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("tiny", overrides=overrides)


@pytest.mark.parametrize("plan, fragment", [
    (BenchPlan(seeds=[]), "non-empty list of distinct integers"),
    (BenchPlan(seeds=[0, 0]), "non-empty list of distinct integers"),
    (BenchPlan(fostering_methods=["magic"]), "Unknown fostering method 'magic'"),
    (BenchPlan(expansion_methods=["doremi"]), "Unknown expansion method 'doremi'"),
    (BenchPlan(targets=["poetry"]), "not domains of this data"),
    (BenchPlan(fostering_methods=[], targets=[]), "Nothing to run"),
    (BenchPlan(variants=[BenchVariant("Paper Run", {"method.beta": 0})]), "must be lower-case letters"),
    (BenchPlan(variants=[BenchVariant("doremi", {"method.eta": 2})]), "already a method"),
    (BenchPlan(variants=[BenchVariant("a", {"method.beta": 0}), BenchVariant("a", {"method.beta": 1})]),
     "already a method or another variant"),
    (BenchPlan(variants=[BenchVariant("longer", {"train.max_steps": 99})]), "may change only method"),
    (BenchPlan(variants=[BenchVariant("other_prior", {"method.prior": {"law": 1.0}})]), "may change only method"),
    (BenchPlan(variants=[BenchVariant("same", {})]), "has no overrides"),
    (BenchPlan(headline="versatune_tuned"), "--headline 'versatune_tuned' is not a fostering row"),
    (BenchPlan(fostering_methods=["uniform"], headline="versatune"), "is not a fostering row"),
    (BenchPlan(targets=[], expansion_variants=[BenchVariant("share90", {"method.target_initial_share": 0.9})]),
     "Expansion variants need expansion targets"),
    (BenchPlan(targets=["law"], variants=[BenchVariant("x", {"method.beta": 0})],
               expansion_variants=[BenchVariant("x", {"method.target_initial_share": 0.9})]), "another variant"),
    (BenchPlan(targets=["law"], expansion_variants=[BenchVariant("wide", {"method.target": "law"})]),
     "may change only method"),
    (BenchPlan(targets=["law"], expansion_variants=[BenchVariant("share90", {"method.target_initial_share": 0.9})],
               headline="share90"), "is not a fostering row"),
])
def test_bad_plans_fail_before_training(plan, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_plan(plan, DOMAINS)


def test_the_headline_may_be_a_variant():
    check_plan(BenchPlan(variants=[BenchVariant("tuned", {"method.eta": 20})], headline="tuned"), DOMAINS)
    check_plan(BenchPlan(headline="doremi"), DOMAINS)


def test_cli_rejects_a_bad_target_before_any_run(tmp_path, monkeypatch, capsys):
    from versatune_mlops.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["bench", "--preset", "tiny", "--quick", "--targets", "poetry", "--output-dir", str(tmp_path)]) == 2
    assert "not domains of this data" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_quick_bench_runs_every_method_as_child_runs_and_resumes(tmp_path, monkeypatch, capsys):
    from versatune_mlops.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "bench"
    # On the multi-genre data: exam QA with MC items beside code and general, which have none.
    args = ["bench", "--preset", "tiny", "--quick", "--max-steps", "6", "--set", "method.interval=3",
            "--set", "train.eval_accuracy=true", "--set", "data.source=multigenre",
            "--set", "data.self_answer_max_tokens=16", "--variant", "versatune_paper:method=versatune,beta=0",
            "--headline", "versatune_paper", "--experiment", "bench", "--output-dir", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())

    assert [r["method"] for r in report["fostering"]["rows"]] == [*FOSTERING_METHODS, "versatune_paper"]
    domains = report["fostering"]["domains"]
    assert len(domains) == 6
    for row in report["fostering"]["rows"]:
        assert row["seeds"] == [0] and set(row["loss_change"]) == set(domains)
        assert all(math.isfinite(cell["mean"]) for cell in row["loss_change"].values())
        assert math.isfinite(row["score"]["mean"]) and math.isfinite(row["gain_over_uniform"]["mean"])
        # Accuracy for the domains with MC items; code and general have none ("n/a").
        assert all(0 <= row["accuracy"][d]["mean"] <= 1 for d in domains if d not in ("code", "general"))
        assert all(math.isnan(row["accuracy"][d]["mean"]) for d in ("code", "general"))
        assert 0 <= row["mean_accuracy"]["mean"] <= 1
    (expansion,) = report["expansion"]["targets"]
    assert expansion["target"] == domains[0]
    assert [r["method"] for r in expansion["rows"]] == list(EXPANSION_METHODS)
    assert report["overhead"]["ratio"] > 0
    duel = report["head_to_head"]
    assert duel["headline"] == "versatune_paper" and len(duel["rows"]) == len(FOSTERING_METHODS)
    assert {r["verdict"] for r in duel["rows"]} == {"one seed: no interval"}
    assert "Head to head: versatune_paper vs every other row" in printed
    assert "| versatune |" in printed and "Expansion, target = law" in printed and "accuracy after training" in printed

    # Only the dynamic methods evaluate mid-run; the static mixtures skip it.
    runs = {(r["mode"], r["method"]): r for r in report["runs"]}
    assert runs[("fostering", "versatune")]["midrun_eval_seconds"] > 0
    assert runs[("fostering", "uniform")]["midrun_eval_seconds"] == 0
    assert len(runs[("fostering", "versatune")]["weight_trajectory"]) > 1

    client = MlflowClient()
    experiment = client.get_experiment_by_name("bench").experiment_id
    parents = client.search_runs([experiment], filter_string="tags.`versatune.step` = 'bench'")
    (parent,) = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(FOSTERING_METHODS) + 1 + len(EXPANSION_METHODS)
    variant_run = next(c for c in children if c.info.run_name == "fostering-versatune_paper-seed0")
    assert float(variant_run.data.params["method.beta"]) == 0.0
    assert {c.info.status for c in children} == {"FINISHED"}
    assert all("score/multi_domain" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "bench")}
    assert {"bench/report.json", "bench/report.md", "bench/figures"} <= artifacts
    assert parent.data.metrics["bench/gain_over_uniform/uniform"] == pytest.approx(0.0)
    assert math.isfinite(parent.data.metrics["bench/head_to_head/versatune_paper_vs/uniform"])

    # A rerun into the same folder reuses every finished run: same numbers, children tagged reused.
    (out / "runs" / "fostering-odm-seed0" / "summary.json").unlink()  # this one is trained again
    assert main(args) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["fostering"] == report["fostering"]
    second = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags
              and r.info.run_id != parent.info.run_id]
    children = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{second[0].info.run_id}'")
    reused = [c for c in children if c.data.tags.get("versatune.reused") == "true"]
    assert len(children) == len(FOSTERING_METHODS) + 1 + len(EXPANSION_METHODS)
    assert len(reused) == len(children) - 1


def test_plan_shares_everything_but_the_mixture_and_runs_seed_major():
    from versatune_mlops.bench.methods import plan_runs

    config = load_config("tiny")
    prior = {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]}
    runs = plan_runs(config, BenchPlan(seeds=[0, 1], fostering_methods=["uniform", "versatune"],
                                       expansion_methods=["target_only"], targets=["code"]), prior)
    assert [r.name for r in runs] == ["fostering-uniform-seed0", "fostering-versatune-seed0",
                                      "expansion-code-target_only-seed0", "fostering-uniform-seed1",
                                      "fostering-versatune-seed1", "expansion-code-target_only-seed1"]
    for run in runs:
        c = run.config
        assert c.method.prior == prior and not c.train.save_model and not c.train.eval_static_mixtures
        assert (c.train.max_steps, c.train.learning_rate, c.method.interval) == (
            config.train.max_steps, config.train.learning_rate, config.method.interval)
    assert runs[2].config.method.mode == "expansion" and runs[2].config.method.target == "code"
    assert runs[3].config.train.seed == 1


def test_a_capped_versatune_variant_is_planned_with_its_cap_and_the_shared_interval():
    from versatune_mlops.bench.methods import plan_runs

    config = load_config("tiny", overrides={"method.interval": 4})
    prior = {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]}
    (run,) = plan_runs(config, BenchPlan(seeds=[1], fostering_methods=[], targets=[],
                                         variants=[BenchVariant("capped", {"method.method": "versatune",
                                                                           "method.max_domain_share": 0.4})]), prior)
    assert (run.name, run.config.method.max_domain_share, run.config.method.interval) == ("fostering-capped-seed1", 0.4, 4)


def test_aioli_gets_an_interval_on_the_shared_grid_that_holds_its_probes():
    from versatune_mlops.bench.methods import plan_runs

    config = load_config("tiny", overrides={"method.interval": 4})
    prior = {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]}
    runs = plan_runs(config, BenchPlan(seeds=[0], fostering_methods=["uniform", "aioli"], expansion_methods=[],
                                       targets=[]), prior)
    # 6 probe steps (one per domain) need more than 4: the next multiple of the shared interval.
    assert [r.config.method.interval for r in runs] == [4, 8]
    assert not any(r.config.train.eval_static_mixtures for r in runs)
    curves = plan_runs(config, BenchPlan(seeds=[0], fostering_methods=["uniform"], expansion_methods=[], targets=[],
                                         variants=list(REFERENCE_ABLATIONS), static_curves=True), prior)
    assert all(r.config.train.eval_static_mixtures for r in curves)  # static mixtures get loss curves too
    assert [r.config.method.reference for r in curves] == ["initial_fraction", "released_code", "curve_fit",
                                                            "specialist"]


def test_a_variant_changes_only_its_method_settings_and_names_its_runs():
    from versatune_mlops.bench.methods import plan_runs

    config = load_config("tiny")
    prior = {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]}
    paper = BenchVariant("versatune_paper", {"method.method": "versatune", "method.beta": 0.0})
    runs = plan_runs(config, BenchPlan(seeds=[3], fostering_methods=["versatune"], variants=[paper]), prior)
    assert [(r.name, r.label) for r in runs] == [("fostering-versatune-seed3", "versatune"),
                                                 ("fostering-versatune_paper-seed3", "versatune_paper")]
    plain, variant = (r.config for r in runs)
    assert (variant.method.method, variant.method.beta, plain.method.beta) == ("versatune", 0.0, config.method.beta)
    assert variant.method.prior == prior and variant.train == plain.train and variant.data == plain.data
    # A variant whose settings do not validate names itself before anything trains.
    broken = BenchVariant("broken", {"method.method": "versatune", "method.eta": -1})
    with pytest.raises(ConfigError, match="fostering-broken-seed3: .*method.eta"):
        plan_runs(config, BenchPlan(seeds=[3], fostering_methods=[], variants=[broken]), prior)


def test_an_expansion_variant_runs_for_every_target_and_is_its_own_expansion_row():
    from versatune_mlops.bench.methods import plan_runs

    config = load_config("tiny")
    prior = {d: 1 / 6 for d in ["law", "medicine", "finance", "science", "code", "general"]}
    share50 = BenchVariant("versatune_share50", {"method.method": "versatune", "method.target_initial_share": 0.5})
    runs = plan_runs(config, BenchPlan(seeds=[1], fostering_methods=[], expansion_methods=["target_only"],
                                       targets=["code", "law"], expansion_variants=[share50]), prior)
    assert [(r.name, r.label) for r in runs] == [
        ("expansion-code-target_only-seed1", "target_only"), ("expansion-law-target_only-seed1", "target_only"),
        ("expansion-code-versatune_share50-seed1", "versatune_share50"),
        ("expansion-law-versatune_share50-seed1", "versatune_share50")]
    variant = runs[2].config.method
    assert (variant.mode, variant.target, variant.method, variant.target_initial_share) == (
        "expansion", "code", "versatune", 0.5)
    assert runs[0].config.method.target_initial_share == config.method.target_initial_share == 0.9
    # Its rows pair with 100% target of the same seed, like the expansion methods.
    records = [record("target_only", 1, (1.6, 2.2, 2.1), mode="expansion", target="law"),
               dataclasses.replace(record("versatune", 1, (1.62, 2.05, 2.1), mode="expansion", target="law"),
                                   label="versatune_share50")]
    rows = {r["method"]: r for r in expansion_table(records)["targets"][0]["rows"]}
    assert rows["versatune_share50"]["kept"]["mean"] == pytest.approx(0.95)
    assert rows["versatune_share50"]["degradation_reduction"]["mean"] == pytest.approx(0.5)
    # An expansion variant with a setting that does not validate names its run before anything trains.
    broken = BenchVariant("broken", {"method.method": "versatune", "method.target_initial_share": 1.5})
    with pytest.raises(ConfigError, match="expansion-code-broken-seed1: .*target_initial_share"):
        plan_runs(config, BenchPlan(seeds=[1], fostering_methods=[], expansion_methods=[], targets=["code"],
                                    expansion_variants=[broken]), prior)


def test_cli_variant_syntax():
    from versatune_mlops.cli.bench import parse_variant as _parse_variant
    from versatune_mlops.errors import VersaTuneError

    variant = _parse_variant("versatune_paper:method=versatune, beta=0,method.eta=0.5")
    assert variant == BenchVariant("versatune_paper", {"method.method": "versatune", "method.beta": 0,
                                                       "method.eta": 0.5})
    for bad in ("no_colon", "label:", ":beta=0", "label:beta"):
        with pytest.raises(VersaTuneError, match="LABEL:KEY=VALUE"):
            _parse_variant(bad)


def test_a_run_on_the_training_loss_signal_counts_no_reweighting_evaluations_and_has_no_loss_curve():
    summary = _summary("versatune", 1, (1.9,) * 3, midrun=[(2, (1.95,) * 3)])
    summary["reweighting_records"].append({"step": 4, "train_loss": {d: 1.9 for d in DOMAINS}, "weights": {}})
    record_ = RunRecord.from_summary(summary)
    assert record_.reweighting_evaluations == 1
    assert [point["step"] for point in record_.loss_curve] == [2]

"""Config loading and the one validation place: every bad value names the problem and the fix."""

import pytest

from versatune_mlops.config import RunConfig, available_presets, load_config, validate_distribution
from versatune_mlops.errors import ConfigError


def test_presets_load_and_validate():
    assert {"tiny", "smollm2"} <= set(available_presets())
    tiny = load_config("tiny")
    assert tiny.model.name == "tiny" and tiny.preset == "tiny"
    assert load_config("smollm2").model.name == "smollm2"


def test_overrides_apply_after_preset():
    config = load_config("tiny", overrides={"train.max_steps": 7, "method.alpha": 0.5})
    assert config.train.max_steps == 7 and config.method.alpha == 0.5


def test_flat_params_have_dotted_keys():
    flat = RunConfig().flat()
    assert flat["train.learning_rate"] == 1e-4 and flat["model.tiny.num_layers"] == 4


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match=r"Unknown preset 'nope'.*tiny"):
        load_config("nope")


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match=r"Unknown config key 'train.max_step'.*Did you mean 'max_steps'"):
        load_config("tiny", overrides={"train.max_step": 3})


def test_yaml_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  max_steps: 3\nmethod:\n  method: uniform\n")
    config = load_config("tiny", path)
    assert config.train.max_steps == 3 and config.method.method == "uniform"
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=bad)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"method.method": "magic"}, "Unknown method 'magic'. Use one of: uniform"),
        ({"method.mode": "grow"}, "Unknown mode 'grow'"),
        ({"method.mode": "expansion"}, "Expansion mode needs a target domain"),
        ({"method.mode": "expansion", "method.target": "law", "method.method": "uniform"}, "does not support it"),
        ({"method.mode": "expansion", "method.target": "poetry", "data.domains": ["law", "code"]},
         "Target domain 'poetry' is not a domain"),
        ({"method.alpha": -1.0}, "method.alpha=-1.0 is out of range"),
        ({"method.beta": float("nan")}, "method.beta=nan is out of range"),
        ({"method.eta": 1e9}, "method.eta=1000000000.0 is out of range"),
        ({"method.epsilon": 1.5}, "method.epsilon=1.5 is out of range; it must be a finite number in [0, 1]"),
        ({"method.interval": -2}, "method.interval=-2"),
        ({"method.prior": {"law": -0.1, "code": 1.0}}, "method.prior['law'] = -0.1 is not a finite non-negative"),
        ({"method.prior": {"law": float("nan"), "code": 1.0}}, "method.prior['law'] = nan"),
        ({"method.prior": {"law": 0.0, "code": 0.0}}, "method.prior sums to zero"),
        ({"method.reference": "fixed"}, "needs method.reference_losses"),
        ({"method.reference": "fixed", "method.reference_losses": {"law": -1.0}}, "must be a finite loss >= 0"),
        ({"train.max_length": 4}, "train.max_length=4 must be >= 8"),
        ({"train.max_steps": 0}, "train.max_steps=0"),
        ({"probe.top_p": 0.0}, "probe.top_p=0.0 must be in (0, 1]"),
        ({"probe.estimator": "bert"}, "probe.estimator='bert' is unknown"),
        ({"data.eval_fraction": 1.0}, "data.eval_fraction=1.0 must be in (0, 1)"),
        ({"data.domains": ["law", "law"]}, "lists a domain twice"),
    ],
)
def test_bad_values_are_rejected_with_a_fix(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides=overrides)
    assert fragment in str(info.value)


def test_validate_distribution_normalises():
    assert validate_distribution({"a": 1, "b": 3}, "w") == {"a": 0.25, "b": 0.75}


def test_a_config_file_that_names_a_preset_builds_on_it(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("preset: tiny\ntrain:\n  max_steps: 3\n")
    config = load_config(config_file=file)
    # defaults < the preset the file names < the file < --set
    assert config.preset == "tiny" and config.model.name == "tiny" and config.probe.num_samples == load_config("tiny").probe.num_samples
    assert config.train.max_steps == 3
    assert load_config(config_file=file, overrides={"train.max_steps": 5}).train.max_steps == 5
    assert load_config("tiny", config_file=file).train.max_steps == 3  # the same preset twice is fine


def test_a_config_file_naming_another_preset_than_the_flag_is_refused(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("preset: tiny\n")
    with pytest.raises(ConfigError, match=r"says 'preset: tiny' but --preset smollm2.*drop --preset"):
        load_config("smollm2", config_file=file)
    file.write_text("preset: nope\n")
    with pytest.raises(ConfigError, match=r"Unknown preset 'nope'"):
        load_config(config_file=file)


@pytest.mark.parametrize("overrides, fragment", [
    ({"preset": "smollm2"}, "pass --preset NAME"),
    ({"method.target": "law"}, "method.target='law' only applies in expansion mode"),
    ({"method.reference_losses": {"law": 1.0}}, "only read with method.reference=fixed"),
    ({"method.method": "doremi", "method.max_domain_share": 0.4}, "caps VersaTune's fostering mixture"),
    ({"method.mode": "expansion", "method.target": "law", "method.max_domain_share": 0.4},
     "expansion bounds its target with method.target_max_share"),
    ({"method.max_domain_share": 1.5}, r"max_domain_share=1.5 must be in \(0, 1\]"),
    ({"method.signal": "test"}, "method.signal='test' is unknown; use one of eval, train"),
    ({"method.method": "aioli", "method.signal": "train"}, "aioli evaluates held-out losses after its own probe"),
    ({"method.reference": "curve_fit", "method.signal": "train"}, "curve_fit fits each domain's held-out loss curve"),
    ({"method.signal_min_tokens": 200}, "pools training-loss windows, but method.signal='eval'"),
    ({"method.signal": "train", "method.signal_min_tokens": -1}, "must be a whole number of tokens >= 0"),
])
def test_keys_that_would_have_no_effect_are_refused(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("tiny", overrides=overrides)


def test_the_training_loss_signal_is_accepted_for_every_method_that_needs_no_held_out_probes():
    for method in ("versatune", "doremi", "odm", "uniform"):
        assert load_config("tiny", overrides={"method.method": method, "method.signal": "train"}).method.signal == "train"


def test_a_share_cap_below_one_over_the_domain_count_is_refused_once_the_domains_are_known():
    """Before any model loads: prepare_inputs checks it against the loaded data's domains."""
    from versatune_mlops.config import check_domains_against_data

    config = load_config("tiny", overrides={"method.max_domain_share": 0.2})
    check_domains_against_data(config, ["law", "medicine", "finance", "science", "code", "general"])  # 0.2 >= 1/6
    with pytest.raises(ConfigError, match=r"method.max_domain_share: 0.2 is below 1/4.*at least 0.2500"):
        check_domains_against_data(config, ["law", "medicine", "code", "general"])


def test_coefficients_come_out_of_the_config_as_one_frozen_object():
    import dataclasses

    coefficients = load_config("tiny", overrides={"method.alpha": 2.0, "method.epsilon": 0.1}).method.coefficients()
    assert (coefficients.alpha, coefficients.beta, coefficients.epsilon) == (2.0, 1.0, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        coefficients.alpha = 3.0


# Numbers as people write them: YAML 1.1 reads 2e-5 as a string, --set and MLproject -P pass text.
@pytest.mark.parametrize("key, value, expected", [
    ("train.learning_rate", "2e-5", 2e-5),
    ("train.learning_rate", "1e-4", 1e-4),
    ("train.learning_rate", 1, 1.0),
    ("train.learning_rate", "0.001", 0.001),
    ("train.max_steps", "3", 3),
    ("train.max_steps", 3.0, 3),  # MLproject's float parameters arrive as 3.0
    ("train.max_steps", "3.0", 3),
    ("model.lora", "true", True),
    ("model.lora", "no", False),
    ("model.lora", "Yes", True),
    ("model.lora", False, False),
    ("data.max_eval_per_domain", None, None),
    ("data.max_eval_per_domain", "null", None),
    ("data.max_eval_per_domain", "12", 12),
    ("distributed.use_gpu", "false", False),
    ("data.domains", ["law", "code"], ["law", "code"]),
    ("data.domains", "law,code", ["law", "code"]),
    ("tune.alpha", ["0", "2e-1"], [0.0, 0.2]),
    ("method.prior", {"law": "1e-1", "code": 1}, {"law": 0.1, "code": 1.0}),
])
def test_values_are_coerced_to_their_declared_type(key, value, expected):
    config = load_config("tiny", overrides={key: value})
    section, name = key.split(".")
    got = getattr(getattr(config, section), name)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key, value, fragment", [
    ("train.max_steps", 2.5, "train.max_steps=2.5 must be an integer"),
    ("train.max_steps", "2.5", "train.max_steps='2.5' must be an integer"),
    ("train.max_steps", True, "train.max_steps=True must be an integer"),
    ("train.learning_rate", "fast", "train.learning_rate='fast' must be a number"),
    ("model.lora", "maybe", "model.lora='maybe' must be a boolean"),
    ("model.lora", 2, "model.lora=2 must be a boolean"),
    ("data.domains", 3, "data.domains=3 must be a list of strings"),
    ("tune.interval", [5, 7.5], "tune.interval[1]=7.5 must be an integer"),
    ("method.prior", [0.5], "method.prior=[0.5] must be a mapping"),
    ("model.name", 1.5, "model.name=1.5 must be a string"),
    ("train", 3, "train must be a mapping"),
])
def test_values_that_cannot_be_converted_name_the_expected_type(key, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", overrides={key: value})
    assert fragment in str(info.value)


def test_a_config_file_with_exponent_numbers_trains_at_that_rate(tmp_path):
    # PyYAML reads 2e-5 (no dot) as the string '2e-5'; the field's type turns it into a float.
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  learning_rate: 2e-5\n  max_steps: '4'\nmodel:\n  bf16: yes\n")
    config = load_config("tiny", path)
    assert config.train.learning_rate == 2e-5 and config.train.max_steps == 4 and config.model.bf16 is True


def test_set_and_mlproject_values_are_coerced_through_the_cli_parser():
    from versatune_mlops.cli.main import build_parser
    from versatune_mlops.cli.options import config_from_args

    # As `mlflow run -P seed=1 -P max_steps=3` renders the train command: floats as 1.0, "" for unset.
    args = build_parser().parse_args(["train", "--preset", "tiny", "--config", "", "--set", "train.learning_rate=2e-5",
                                      "--max-steps", "3", "--seed", "1.0", "--target", "", "--output-dir", "o"])
    config = config_from_args(args)
    assert config.train.learning_rate == 2e-5 and config.train.max_steps == 3 and config.train.seed == 1
    args = build_parser().parse_args(["train", "--preset", "tiny", "--set", "train.max_steps=2.5", "--output-dir", "o"])
    with pytest.raises(ConfigError, match="train.max_steps=2.5 must be an integer"):
        config_from_args(args)


def test_every_preset_value_already_has_its_declared_type():
    import dataclasses
    import typing

    for name in available_presets():
        config = load_config(name)
        for section in dataclasses.fields(config):
            value = getattr(config, section.name)
            if dataclasses.is_dataclass(value):
                for f in dataclasses.fields(value):
                    hint = typing.get_type_hints(type(value))[f.name]
                    if hint in (int, float, bool, str):
                        assert type(getattr(value, f.name)) is hint, (name, section.name, f.name)

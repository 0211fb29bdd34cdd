"""The project's own files agree: MLproject, conda.yaml and requirements pin the same packages."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _requirement_lines(name):
    lines = (ROOT / name).read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_conda_env_pins_match_requirements():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    assert "python=3.11.7" in conda["dependencies"], "--env-manager virtualenv needs an exact Python"
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert set(pip) == _requirement_lines("requirements.txt")
    assert "torch==2.13.0" in pip, "an unpinned torch pulls a multi-GB CUDA build"


def test_mlproject_entry_points_call_the_cli():
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert project["conda_env"] == "conda.yaml"
    for name in ("probe", "train", "tune", "register", "main", "bench"):
        assert project["entry_points"][name]["command"].startswith(f"versatune {name} ")


def test_every_mlproject_command_parses_with_its_default_parameters():
    import shlex

    from versatune_mlops.cli import build_parser

    project = yaml.safe_load((ROOT / "MLproject").read_text())
    for name, entry in project["entry_points"].items():
        defaults = {k: str(v["default"]) for k, v in entry["parameters"].items()}
        argv = shlex.split(entry["command"].format(**{k: shlex.quote(v) for k, v in defaults.items()}))
        args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an option the CLI lacks
        assert args.command == name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme.split("\n## ")[0]
    assert "make test" in (ROOT / ".ci" / "run").read_text()

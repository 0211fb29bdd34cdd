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


def test_a_built_wheel_installs_and_finds_its_presets_outside_the_checkout(tmp_path):
    """`pip install .` (not only an editable checkout): the CLI runs and the presets ship as package data."""
    import os
    import subprocess
    import sys
    import sysconfig

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, cwd=tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment (a path entry, so its editable checkout is not seen;
    # --ignore-installed, because pip would see that checkout's metadata there and skip the wheel).
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                    *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_text = subprocess.run([str(venv / "bin" / "versatune"), "--help"], cwd=elsewhere, env=env,
                               check=True, capture_output=True, text=True).stdout
    assert "train" in help_text and "bench" in help_text
    code = ("import versatune_mlops, versatune_mlops.config as c; "
            "print(versatune_mlops.__file__); print(c.available_presets()); print(c.load_config('tiny').model.name)")
    out = subprocess.run([str(python), "-c", code], cwd=elsewhere, env=env, check=True, capture_output=True,
                         text=True).stdout.splitlines()
    assert out[0].startswith(site), f"imported {out[0]}, not the installed wheel"
    assert "tiny" in out[1] and "smollm2" in out[1]
    assert out[2] == "tiny"

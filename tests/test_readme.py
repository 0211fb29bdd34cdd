"""Every command line the README shows parses and loads its config, so an example cannot drift from the code.

`versatune ...` lines are parsed by the CLI's own parser; `mlflow run . -e NAME -P k=v` lines (and the
Makefile's) are rendered by MLflow's own MLproject code into the `versatune` command they run. Each then
builds its config as the command would, without training anything.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from mlflow.projects._project_spec import load_project

from versatune_mlops.cli.main import build_parser
from versatune_mlops.cli.options import config_from_args

ROOT = Path(__file__).resolve().parent.parent


def _shell_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks, continuation lines joined and comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _argv(line: str) -> list[str] | None:
    """The argv after `versatune` (or of the versatune command an `mlflow run` line runs), else None."""
    line = line.replace("<run id>", "RUNID")
    if "...same arguments..." in line:  # a stand-in, not a command
        return None
    words = shlex.split(line)
    for i, word in enumerate(words):
        if word.endswith("/versatune") or word == "versatune":
            return words[i + 1:]
        if word.endswith("mlflow") and words[i + 1:i + 2] == ["run"]:
            return _mlflow_run_argv(words[i + 2:])
    return None


def _mlflow_run_argv(words: list[str]) -> list[str] | None:
    entry, params = "main", {}
    for flag, value in zip(words, words[1:]):
        if flag == "-e":
            entry = value
        elif flag == "-P":
            key, value = value.split("=", 1)
            params[key] = value
    command = load_project(str(ROOT)).get_entry_point(entry).compute_command(params, None)
    return shlex.split(command)[1:]


def _examples() -> list[str]:
    lines = _shell_lines((ROOT / "README.md").read_text())
    lines += [line.strip() for line in (ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines()
              if "mlflow run" in line or "/versatune " in line]
    return [line for line in lines if _argv(line) is not None]


EXAMPLES = _examples()


def test_the_readme_has_examples_to_check():
    assert len(EXAMPLES) >= 15, EXAMPLES


@pytest.mark.parametrize("line", EXAMPLES)
def test_a_readme_command_line_parses_and_loads_its_config(line):
    argv = [word.replace("$(VENV)", ".venv").replace("$(CURDIR)", ".") for word in _argv(line)]
    args = build_parser().parse_args(argv)
    if hasattr(args, "preset"):
        config_from_args(args)


def test_the_readme_set_example_sets_the_value():
    text = (ROOT / "README.md").read_text()
    sets = re.findall(r"`(--set \w+\.\w+=[^`]+)`", text)  # not the generic `--set key=value`
    assert sets, "the README shows no --set example"
    for example in sets:
        args = build_parser().parse_args(["train", "--preset", "tiny", "--output-dir", "o", *shlex.split(example)])
        config = config_from_args(args)
        for item in args.set:
            key, value = item.split("=", 1)
            section, name = key.split(".")
            got = getattr(getattr(config, section), name)
            assert (got == pytest.approx(float(value))) if re.fullmatch(r"[-+.\de]+", value) else got == value, item

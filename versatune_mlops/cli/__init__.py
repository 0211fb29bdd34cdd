"""`versatune` command line: probe, train, register, main, tune (commands.py) and the benchmarks
(bench.py). The modules here only parse, validate and print; the work is in the package below."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]

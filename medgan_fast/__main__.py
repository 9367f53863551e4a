"""`python -m medgan_fast`: what was built, and the commands this installation has."""

import argparse
import ast
import importlib.util
from pathlib import Path

from . import build_info, cli

# The command lines of DESIGN.md, in pipeline order; those not written yet are skipped.
COMMANDS = ("patches", "train", "generate", "evaluate", "segment", "augment", "experiment", "anomaly",
            "translate")


def command_summaries() -> list[tuple[str, str]]:
    """(name, first docstring line) of each command module present, without importing it."""
    found = []
    for name in COMMANDS:
        spec = importlib.util.find_spec(f"medgan_fast.{name}")
        if spec is None or spec.origin is None:
            continue
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        found.append((name, first.split("`: ", 1)[-1]))   # without the "`python -m ...`: " prefix
    return found


def build_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<10} {summary}" for name, summary in command_summaries())
    return argparse.ArgumentParser(
        prog="python -m medgan_fast", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Says what this installation of medgan_fast was built with, and lists its commands.",
        epilog=f"commands (python -m medgan_fast.<command> --help: runnable examples):\n{commands}\n\nexample:\n"
               "  python -m medgan_fast.train        trains a DCGAN-64 on the embedded sample")


def run(args: argparse.Namespace) -> str:
    lines = ["medgan_fast build:", *(f"  {key}: {value}" for key, value in build_info().items()),
             "", "commands (python -m medgan_fast.<command> --help):"]
    lines += [f"  {name:<10} {summary}" for name, summary in command_summaries()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cli.main("medgan_fast", build_parser, run, argv)


if __name__ == "__main__":
    main()

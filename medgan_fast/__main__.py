"""`python -m medgan_fast`: what was built, and the commands this installation has."""

import ast
import importlib.util
from pathlib import Path

from . import build_info

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
        found.append((name, doc.strip().splitlines()[0] if doc.strip() else ""))
    return found


def main() -> None:
    info = build_info()
    print("medgan_fast build:")
    for key, value in info.items():
        print(f"  {key}: {value}")
    print("\ncommands (python -m medgan_fast.<command> --help):")
    for name, summary in command_summaries():
        print(f"  {name:<10} {summary}")


if __name__ == "__main__":
    main()

"""Documented command outputs: run the command, commit what it printed, regenerate the docs.

    PYTHONPATH=. python -m benchmarks.docs_outputs            # every entry (main job ~1 min)
    PYTHONPATH=. python -m benchmarks.docs_outputs debug      # one entry

Why: numbers typed into docs drift from what the commands print (issue 12). Each documented
output is an :class:`Entry`: a ``fedkd-sim`` command line, the doc that shows its output between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers, and how the shown excerpt is cut from
the output. Running an entry writes ``docs/generated/NAME.txt`` (the lines the command printed,
Hydra's timestamped log lines left out) and ``docs/generated/NAME.config.yaml`` (the config
the run resolved), both committed, then rewrites the doc block from them.

``tests/test_docs_outputs.py`` keeps them honest without re-running the expensive commands:
every doc block must equal the rendering of its committed output, every committed config must
equal what the command composes today (a changed default makes the output stale), and the
cheap entries (the debug experiment) are re-run by the test suite and compared at the printed
precision (:func:`comparable` masks only times and the run directory).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import update_docs

REPO = Path(__file__).resolve().parent.parent
GENERATED = REPO / "docs" / "generated"
HYDRA_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[")
# what legitimately differs between two runs of one command: wall times and the run directory
TIME_FIELDS = (
    (re.compile(r"\s+\d+\.\ds(?=\s*(\[|$))"), " <s>"),  # a round line's seconds
    (re.compile(r", \d+s$"), ", <s>"),  # the summary's total seconds
    (re.compile(r"^outputs in .*$"), "outputs in <run dir>"),
)


def _all(lines: list[str]) -> list[str]:
    return lines


def _last_round_and_summary(lines: list[str]) -> list[str]:
    """The last round line (cut after its traffic total) and the summary that follows."""
    rounds = [i for i, line in enumerate(lines) if line.lstrip().startswith("round ")]
    last = lines[rounds[-1]]
    cut = re.match(r"(.*?total\s+[\d.]+ [KMG]?i?B)", last)
    return [f"{cut.group(1)} ..." if cut else last, *lines[rounds[-1] + 1 :]]


@dataclass(frozen=True)
class Entry:
    """One documented command and where its output is shown."""

    argv: tuple[str, ...]  # fedkd-sim overrides, exactly as the doc gives them
    doc: str  # the doc (relative to the repository root) holding the NAME markers
    excerpt: Callable[[list[str]], list[str]] = _all
    cheap: bool = False  # re-run by the test suite (seconds), not only by this script

    @property
    def command(self) -> str:
        return " ".join(("fedkd-sim", *self.argv))


ENTRIES: dict[str, Entry] = {
    "main_job": Entry(argv=(), doc="README.md", excerpt=_last_round_and_summary),
    "debug": Entry(argv=("experiment=debug",), doc="docs/simulation.md", cheap=True),
}


def printed_lines(stdout: str) -> list[str]:
    """What a user reads in the command's output, without Hydra's timestamped log lines."""
    lines = [line.rstrip() for line in stdout.splitlines() if not HYDRA_LOG_LINE.match(line)]
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def comparable(lines: list[str]) -> list[str]:
    """``lines`` with wall times and the run directory masked: the rest must match exactly."""
    out = []
    for line in lines:
        for pattern, mask in TIME_FIELDS:
            line = pattern.sub(mask, line)
        out.append(line)
    return out


def committed(name: str) -> list[str]:
    """The committed output of entry ``name`` (``docs/generated/NAME.txt``)."""
    return (GENERATED / f"{name}.txt").read_text().splitlines()


def render(name: str) -> str:
    """The doc block of entry ``name``, from its committed output."""
    return "```text\n" + "\n".join(ENTRIES[name].excerpt(committed(name))) + "\n```"


def regenerate_command(name: str) -> str:
    return f"PYTHONPATH=. python -m benchmarks.docs_outputs {name}"


def write_doc(name: str) -> None:
    """Rewrite the doc block of ``name`` from its committed output."""
    entry = ENTRIES[name]
    update_docs(
        REPO / entry.doc,
        name,
        render(name),
        f"{entry.command}`, via `{regenerate_command(name)}",
    )


def run_entry(name: str) -> None:
    """Run the documented command in a scratch directory; commit what it printed and used."""
    entry = ENTRIES[name]
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run(
            [sys.executable, "-m", "simulations.run", *entry.argv],
            cwd=scratch,  # outputs/<date>/<time> lands here, as it would for a user
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{entry.command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = printed_lines(proc.stdout)
        run_dir = next(line for line in lines if line.startswith("outputs in ")).split(" ", 2)[2]
        config = (Path(scratch) / run_dir / "config.yaml").read_text()
        # as a user sees it from where they ran it: outputs/<date>/<time>
        lines = [line.replace(str(Path(scratch).resolve()) + os.sep, "") for line in lines]
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (GENERATED / f"{name}.config.yaml").write_text(config)
    write_doc(name)
    print(f"{name}: {entry.command} -> docs/generated/{name}.txt, {entry.doc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"entries (default all): {', '.join(ENTRIES)}")
    parser.add_argument(
        "--docs-only", action="store_true", help="rewrite the doc blocks from committed outputs"
    )
    args = parser.parse_args()
    unknown = [name for name in args.names if name not in ENTRIES]
    if unknown:
        parser.error(f"unknown entry {unknown[0]!r}; known: {', '.join(ENTRIES)}")
    for name in args.names or list(ENTRIES):
        if args.docs_only:
            write_doc(name)
        else:
            run_entry(name)


if __name__ == "__main__":
    main()

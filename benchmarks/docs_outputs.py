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
ROUND_LINE = re.compile(r"round\s+\d+/\d+\s+student")
# what legitimately differs between two runs of one command: wall times and the run directory
TIME_FIELDS = (
    (re.compile(r"\s+\d+\.\ds(?=\s*(\[|$))"), " <s>"),  # a round line's seconds
    (re.compile(r", \d+s$"), ", <s>"),  # the summary's total seconds
    (re.compile(r"^outputs in .*$"), "outputs in <run dir>"),
    (re.compile(r"^run directory: .*$"), "run directory: <run dir>"),
    (re.compile(r"^study took \d+s$"), "study took <s>"),
    (re.compile(r"^Successfully started run \d+$"), "Successfully started run <id>"),
    (re.compile(r"^Successfully installed fedkd to .*$"), "Successfully installed fedkd to <dir>"),
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
    """One documented command and where its output is shown.

    ``kind="fedkd-sim"``: ``argv`` are fedkd-sim overrides, exactly as the doc gives them.
    ``kind="deploy"``: docs/deploy.md's loopback quick start (SuperLink, two SuperNodes on the
    demo devices' data, ``flwr run . loopback --stream``); ``argv`` is its ``--run-config``.
    """

    argv: tuple[str, ...]
    doc: str  # the doc (relative to the repository root) holding the NAME markers
    excerpt: Callable[[list[str]], list[str]] = _all
    cheap: bool = False  # re-run by the test suite (seconds), not only by this script
    kind: str = "fedkd-sim"  # or "continual" (python -m simulations.continual_study), "deploy"

    @property
    def command(self) -> str:
        if self.kind == "deploy":
            return f'flwr run . loopback --stream --run-config "{" ".join(self.argv)}"'
        return " ".join((PROGRAMS[self.kind][0], *self.argv))


# kind -> (the command a user types, the module it runs, config root, primary config name)
PROGRAMS = {
    "fedkd-sim": ("fedkd-sim", "simulations.run", "conf", "config"),
    "continual": (
        "python -m simulations.continual_study",
        "simulations.continual_study",
        "conf_continual",
        "continual",
    ),
    "fcl": ("fedkd-fcl", "simulations.fcl", "conf_continual", "fcl"),
}


def _fcl_table(lines: list[str]) -> list[str]:
    """fedkd-fcl's summary table: from its title line (scenario, tasks, seeds) to its end."""
    start = next(i for i, line in enumerate(lines) if re.match(r"^\w+_il, \d+ tasks", line))
    end = next(i for i in range(start + 3, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


# the FCL comparisons of docs/continual.md §7 (2-5 minutes each on 2 cores)
_WITH_JOINT = (
    "+fcl/variant@variants.fedavg_joint=fedavg_joint",
    "+fcl/variant@variants.fd_joint=fd_joint",
)
# which LwF keeps what: the FD variants with the student's retention switched on and off
_RETENTION = (
    "~fcl/variant@variants.fedavg_finetune",
    "~fcl/variant@variants.fedavg_lwf",
    "+fcl/variant@variants.fd_finetune_student_lwf=fd_finetune",
    "variants.fd_finetune_student_lwf.server_lam=1.0",
    "+fcl/variant@variants.fd_lwf_student_plain=fd_lwf",
    "variants.fd_lwf_student_plain.server_lam=0.0",
    "plots=false",
)


def _fcl_comparison(*argv: str) -> Entry:
    """A ``fedkd-fcl`` comparison in docs/continual.md §7 (one torch thread, as measured),
    shown as its summary table."""
    return Entry(argv=(*argv, "threads=1"), doc="docs/continual.md", excerpt=_fcl_table, kind="fcl")


ENTRIES: dict[str, Entry] = {
    "main_job": Entry(argv=(), doc="README.md", excerpt=_last_round_and_summary),
    "debug": Entry(argv=("experiment=debug",), doc="docs/simulation.md", cheap=True),
    "continual_default": Entry(argv=(), doc="docs/continual.md", kind="continual"),
    "deploy_loopback": Entry(
        argv=("num-rounds=3", "num-clients=2"), doc="docs/deploy.md", kind="deploy"
    ),
    "fcl_task_il": _fcl_comparison("continual/sequence=split_digits_task_il", *_WITH_JOINT),
    "fcl_task_il_retention": _fcl_comparison(*_RETENTION),
    "fcl_task_il_retention_current": _fcl_comparison("query=current", *_RETENTION),
    "fcl_domain_il_retention": _fcl_comparison("continual/sequence=rotated_digits", *_RETENTION),
    "fcl_class_il": _fcl_comparison("continual/sequence=split_digits_class_il", *_WITH_JOINT),
    "fcl_shifted": _fcl_comparison("clients.schedule_shift=1"),
    "fcl_domain_il": _fcl_comparison("continual/sequence=rotated_digits"),
    "fcl_domain_il_current": _fcl_comparison("continual/sequence=rotated_digits", "query=current"),
    "fcl_domain_il_shifted": _fcl_comparison(
        "continual/sequence=rotated_digits", "clients.schedule_shift=1"
    ),
    "fcl_ray": Entry(
        argv=("engine=ray", "seeds=[0]", "clients.schedule_shift=1", "plots=false"),
        doc="docs/continual.md",
        kind="fcl",
    ),
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
    if entry.kind == "deploy":
        lines, config = run_deploy(entry)
    else:
        lines, config = run_hydra_tool(entry)
    GENERATED.mkdir(parents=True, exist_ok=True)
    (GENERATED / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (GENERATED / f"{name}.config.yaml").write_text(config)
    write_doc(name)
    print(f"{name}: {entry.command} -> docs/generated/{name}.txt, {entry.doc}")


def run_hydra_tool(entry: Entry) -> tuple[list[str], str]:
    """``fedkd-sim ARGV`` (or the continual study) from a scratch directory: its printed lines
    and its config.yaml."""
    with tempfile.TemporaryDirectory() as scratch:
        proc = subprocess.run(
            [sys.executable, "-m", PROGRAMS[entry.kind][1], *entry.argv],
            cwd=scratch,  # outputs/<date>/<time> lands here, as it would for a user
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{entry.command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        lines = printed_lines(proc.stdout)
        run_dir = next(
            line.split(" ", 2)[2]
            for line in lines
            if line.startswith(("outputs in ", "run directory: "))
        )
        config = (Path(scratch) / run_dir / "config.yaml").read_text()
        # as a user sees it from where they ran it: outputs/<date>/<time>
        lines = [line.replace(str(Path(scratch).resolve()) + os.sep, "") for line in lines]
    return lines, config


def run_deploy(entry: Entry) -> tuple[list[str], str]:
    """docs/deploy.md's loopback quick start, with the tests' harness (every process ends):
    demo device data, a SuperLink, two SuperNodes on their .npz files, ``flwr run --stream``.
    Returns what ``flwr run`` printed and the run's flat run-config (as YAML)."""
    from tests.deploy.harness import Federation, free_port

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = root / "runs" / "device-data"
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "make_device_data.py"), "--out-dir",
             str(data), "--num-partitions", "2"],
            check=True, capture_output=True, cwd=REPO,
        )  # fmt: skip
        federation = Federation(root / "federation")
        try:
            port = free_port()
            federation.superlink(port)
            for pid in (0, 1):
                federation.supernode(
                    f"supernode-{pid}",
                    port,
                    f"data-path='{data / f'partition-{pid}.npz'}' partition-id={pid}",
                )
            federation.connection("loopback", port)
            run_dir = root / "runs" / "loopback"
            code, output = federation.flwr_run(
                "loopback", " ".join((*entry.argv, f"run-dir='{run_dir}'"))
            )
            if code != 0:
                raise SystemExit(f"{entry.command} failed ({code}):\n{output[-3000:]}")
        finally:
            federation.close()
    lines = [line.replace(str(federation.home), "...") for line in printed_lines(output)]
    # the ServerApp's progress lines reach the stream behind Flower's log prefix: keep from
    # "round" on; Flower's own "Successfully ..." lines as they are
    keep = [ln for ln in lines if ln.startswith("Successfully")]
    keep += [ln[m.start() :] for ln in lines if (m := ROUND_LINE.search(ln))]
    return keep, yaml_dump(deploy_run_config(entry))


def deploy_run_config(entry: Entry) -> dict[str, object]:
    """The flat run-config ``flwr run`` composes today: pyproject's ``[tool.flwr.app.config]``
    with the entry's ``--run-config`` values (run-dir aside), checked through FDConfig."""
    import tomllib

    from fedkd.config import from_run_config, to_run_config

    flat = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    for item in entry.argv:
        key, value = item.split("=", 1)
        flat[key] = tomllib.loads(f"v = {value}")["v"]
    return dict(to_run_config(from_run_config(flat)))


def yaml_dump(tree: dict[str, object]) -> str:
    import yaml

    return str(yaml.safe_dump(tree, sort_keys=False))


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

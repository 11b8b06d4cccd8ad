"""Print the markdown table of every FDConfig key for docs/config.md.

    .venv/bin/python docs/gen_config_table.py            # rewrite the table in docs/config.md
    .venv/bin/python docs/gen_config_table.py --print    # print it

The table comes from ``dataclasses.fields(FDConfig)``: name, type, default and the help text
kept in each field's metadata, so the page cannot drift from the code. The Hydra column shows
where the default ``conf/config.yaml`` composition sets the key; keys it does not set are added
with ``+fd.<name>=...``. Where ``fedkd-sim``'s default differs from the dataclass's (the
run-config default of ``flwr run .``), the default column shows both. ``tests/fedkd/test_config``
checks that docs/config.md holds exactly this table.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from fedkd.config import FDConfig  # noqa: E402


def hydra_defaults() -> tuple[dict[str, object], dict[str, str]]:
    """Field name → value and Hydra path in the default composition (empty without Hydra)."""
    try:
        from hydra import compose, initialize_config_dir

        from simulations.hydra_config import flatten_fd_groups
    except ImportError:
        return {}, {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config")
    return flatten_fd_groups(cfg)


def _shown(value: object) -> str:
    return f"`{value!r}`" if isinstance(value, str) else f"`{value}`"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def config_table() -> str:
    """The markdown table, one row per FDConfig field, in declaration order."""
    values, paths = hydra_defaults()
    rows = [
        "| run-config key | Hydra | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(FDConfig):
        key = f.name.replace("_", "-")
        hydra = f"`{paths.get(f.name, f'+fd.{f.name}')}`"
        if f.name == "run_dir":  # fedkd-sim passes Hydra's run directory
            hydra = "`hydra.run.dir`"
        default = f.default if f.default is not dataclasses.MISSING else ""
        shown = _shown(default)
        if f.name in values and values[f.name] != default and f.name != "run_dir":
            shown += f" (fedkd-sim: {_shown(values[f.name])})"
        help_text = _cell(f.metadata.get("help", ""))
        rows.append(f"| `{key}` | {hydra} | {f.type} | {shown} | {help_text} |")
    return "\n".join(rows)


MARKER = "config_table"


def write_docs() -> None:
    """Rewrite the table between the ``config_table`` markers of docs/config.md."""
    from benchmarks.common import update_docs

    update_docs(
        ROOT / "docs" / "config.md", MARKER, config_table(), "python docs/gen_config_table.py"
    )


if __name__ == "__main__":
    if "--print" in sys.argv[1:]:
        print(config_table())
    else:
        write_docs()

"""Docs show what the documented commands print (benchmarks/docs_outputs.py), not typed numbers.

Cheap by design (well under a second): the expensive commands are not re-run here. Three checks:
each doc block is the rendering of its committed output; each committed output was made with
the config the command composes today (a changed default or preset makes it stale); and the
cheap entries are re-run by ``tests/simulations/test_hydra.py`` (the debug experiment test,
which compares its output with ``docs/generated/debug.txt`` at the printed precision).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.docs_outputs import (
    ENTRIES,
    GENERATED,
    PROGRAMS,
    REPO,
    committed,
    comparable,
    deploy_run_config,
    render,
)
from simulations.paths import conf_dir
from strategies.fed_distill import RoundRecord
from strategies.reporting import format_round

STALE = "stale: regenerate with `PYTHONPATH=. python -m benchmarks.docs_outputs {name}`"


def _block(doc: Path, name: str) -> str:
    text = doc.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    assert begin in text and end in text, f"{doc} lacks the markers of {name}"
    return text.split(begin, 1)[1].split(end, 1)[0]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_doc_block_is_the_committed_output(name: str) -> None:
    block = _block(REPO / ENTRIES[name].doc, name)
    assert render(name) in block, STALE.format(name=name)
    assert "do not edit by hand" in block


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_committed_output_was_made_with_todays_config(name: str) -> None:
    entry = ENTRIES[name]
    if entry.kind == "deploy":
        today: dict = deploy_run_config(entry)
    else:
        _, _, root, config_name = PROGRAMS[entry.kind]
        with initialize_config_dir(config_dir=conf_dir(root), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(entry.argv))
        composed = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(composed, dict)
        composed.pop("hydra", None)
        today = composed
    saved = yaml.safe_load((GENERATED / f"{name}.config.yaml").read_text())
    assert saved == today, STALE.format(name=name)


def _shape(line: str) -> str:
    """A progress line without its numbers: what a format change alters."""
    return " ".join(re.sub(r"\d+(\.\d+)?", "#", line).split())


@pytest.mark.parametrize(
    "name", sorted(n for n, e in ENTRIES.items() if e.kind in ("fedkd-sim", "deploy"))
)
def test_committed_round_lines_have_todays_format(name: str) -> None:
    """Catches a changed progress line (e.g. 'student acc' → 'student test acc (val …)') in the
    expensive entries too, without re-running them."""
    probe = RoundRecord(
        round=1,
        student_accuracy=0.5,
        student_loss=1.0,
        client_accuracy=0.5,
        teacher_accuracy=0.5,
        bytes_up=2048,
        bytes_down=2048,
        cum_bytes=4096,
        valid_replies=2,
        rejected=0,
        student_val_accuracy=0.5,
    )
    today = _shape(format_round(probe, 3))
    rounds = [line for line in committed(name) if line.startswith("round ")]
    assert rounds, f"docs/generated/{name}.txt has no round lines"
    for line in rounds:
        # units (KiB/MiB) follow the numbers; compare the words around them
        shape = re.sub(r"# (KiB|MiB|GiB|B)\b", "# <unit>", _shape(line))
        assert shape == re.sub(r"# (KiB|MiB|GiB|B)\b", "# <unit>", today), STALE.format(name=name)


def test_masking_keeps_every_number_but_times() -> None:
    lines = committed("debug")
    masked = comparable(lines)
    assert masked != lines  # the seconds are masked ...
    digits = [c for line in masked for c in line if c.isdigit()]
    assert len(digits) > 0.8 * sum(c.isdigit() for line in lines for c in line)  # ... only them

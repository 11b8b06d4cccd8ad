"""Docs show what the documented commands print (benchmarks/docs_outputs.py), not typed numbers.

Cheap by design (well under a second): the expensive commands are not re-run here. Three checks:
each doc block is the rendering of its committed output; each committed output was made with
the config the command composes today (a changed default or preset makes it stale); and the
cheap entries are re-run by ``tests/simulations/test_hydra.py`` (the debug experiment test,
which compares its output with ``docs/generated/debug.txt`` at the printed precision).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.docs_outputs import ENTRIES, GENERATED, REPO, committed, comparable, render
from simulations.paths import CONF_DIR

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
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(ENTRIES[name].argv))
    today = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(today, dict)
    today.pop("hydra", None)
    saved = yaml.safe_load((GENERATED / f"{name}.config.yaml").read_text())
    assert saved == today, STALE.format(name=name)


def test_masking_keeps_every_number_but_times() -> None:
    lines = committed("debug")
    masked = comparable(lines)
    assert masked != lines  # the seconds are masked ...
    digits = [c for line in masked for c in line if c.isdigit()]
    assert len(digits) > 0.8 * sum(c.isdigit() for line in lines for c in line)  # ... only them

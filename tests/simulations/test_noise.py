"""One copy of each Flower line under Hydra's logging, and none of the stack's known noise."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytest
import yaml
from flwr.common.logger import ConsoleHandler
from flwr.common.logger import log as flower_log

from simulations.noise import flower_logs_once

HYDRA_JOB_LOGGING = Path(hydra.__file__).parent / "conf/hydra/job_logging/default.yaml"


@dataclass
class Terminal:
    """What the user sees (console) and what the run keeps (Hydra's run log)."""

    console: io.StringIO
    run_log: Path

    def printed(self, text: str) -> int:
        return self.console.getvalue().count(text)


@pytest.fixture
def hydra_logging(tmp_path: Path) -> Iterator[Terminal]:
    """Root handlers as Hydra's default job_logging builds them (console, run log), writing to
    one console buffer with Flower's own handler. Built by hand: ``dictConfig`` would close
    pytest's handlers."""
    config = yaml.safe_load(HYDRA_JOB_LOGGING.read_text())
    assert config["root"]["handlers"] == ["console", "file"]
    formatter = logging.Formatter(config["formatters"]["simple"]["format"])
    console = io.StringIO()
    handlers: list[logging.Handler] = [
        logging.StreamHandler(console),
        logging.FileHandler(tmp_path / "run.log"),
    ]
    root = logging.getLogger()
    level = root.level
    root.setLevel(config["root"]["level"])
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    flower = [h for h in logging.getLogger("flwr").handlers if isinstance(h, ConsoleHandler)]
    assert flower, "Flower no longer attaches its own console handler: revisit simulations.noise"
    streams = [h.stream for h in flower]
    # Other tests (benchmarks) quieten Flower; start from Flower's own defaults here.
    flwr_logger = logging.getLogger("flwr")
    saved = (flwr_logger.level, [h.level for h in flower], logging.root.manager.disable)
    flwr_logger.setLevel(logging.DEBUG)
    logging.disable(logging.NOTSET)
    for handler in flower:
        handler.stream = console
        handler.setLevel(logging.INFO)
    yield Terminal(console, tmp_path / "run.log")
    flwr_logger.setLevel(saved[0])
    for handler, handler_level in zip(flower, saved[1], strict=True):
        handler.setLevel(handler_level)
    logging.disable(saved[2])
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)
    for handler, stream in zip(flower, streams, strict=True):
        handler.stream = stream


def test_without_the_fix_hydra_prints_flower_lines_twice(hydra_logging: Terminal) -> None:
    """The bug :mod:`simulations.noise` fixes, reproduced (keeps the test below honest)."""
    flower_log(logging.INFO, "configure_train: Sampled 4 nodes")
    assert hydra_logging.printed("Sampled 4 nodes") == 2


def test_flower_line_printed_once_and_kept_in_the_run_log(hydra_logging: Terminal) -> None:
    with flower_logs_once():
        flower_log(logging.INFO, "configure_train: Sampled 4 nodes")
        flower_log(logging.DEBUG, "a debug line")
        flower_log(logging.WARNING, "Manually terminating ClientAppActor")
        flower_log(logging.WARNING, "`run_simulation` function is deprecated")
        flower_log(logging.WARNING, "a warning worth reading")
    assert hydra_logging.printed("Sampled 4 nodes") == 1
    assert hydra_logging.printed("a warning worth reading") == 1
    assert hydra_logging.printed("a debug line") == 0
    assert hydra_logging.printed("Manually terminating") == 0
    assert hydra_logging.printed("deprecated") == 0
    assert "Sampled 4 nodes" in hydra_logging.run_log.read_text()
    # restored afterwards: Flower's own handler is back
    assert any(isinstance(h, ConsoleHandler) for h in logging.getLogger("flwr").handlers)


def test_verbose_lets_flower_debug_through_once(hydra_logging: Terminal) -> None:
    with flower_logs_once(verbose=True):
        flower_log(logging.DEBUG, "a debug line")
    assert hydra_logging.printed("a debug line") == 1

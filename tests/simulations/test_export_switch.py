"""The ``export_student`` Hydra switch: validated at config time, run after the simulation."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from fedkd.config import ConfigError
from simulations.hydra_config import EXPORT_CHOICES, build_run_spec
from simulations.run import CONF_DIR


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_default_is_off_and_every_method_validates() -> None:
    assert build_run_spec(_compose()).export_student == "none"
    for method in EXPORT_CHOICES:
        assert build_run_spec(_compose(f"export_student={method}")).export_student == method


def test_unknown_method_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"export_student.*'zip'.*ptq, qat, prune"):
        build_run_spec(_compose("export_student=zip"))

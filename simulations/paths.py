"""Where the Hydra configs live, in a source checkout, an editable install and a wheel.

The configs are kept at the repository's top-level ``conf/`` (where the docs point). A wheel
ships them inside the package as ``simulations/conf`` (hatch ``force-include`` in
``pyproject.toml``), so a non-editable ``pip install .`` runs ``fedkd-sim`` too. An editable
install or a checkout has no ``simulations/conf`` and reads ``conf/`` next to the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> str:
    """Absolute path of the config directory (absolute: works from any working directory)."""
    packaged = _PACKAGE / "conf"
    if packaged.is_dir():
        return str(packaged)
    return str(_PACKAGE.parent / "conf")


CONF_DIR = conf_dir()

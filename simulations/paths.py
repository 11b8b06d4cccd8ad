"""Where the Hydra configs live, in a source checkout, an editable install and a wheel.

The configs are kept at the repository's top level (where the docs point): ``conf/`` for
``fedkd-sim``, ``conf_continual/`` for the continual-learning tools (``fedkd-fcl``, the
forgetting study). Two roots because Hydra's ``--help`` lists every group under a config root:
one root would show ``fedkd-sim`` users the continual groups it never reads. A wheel ships them
inside the package as ``simulations/conf`` and ``simulations/conf_continual`` (hatch
``force-include`` in ``pyproject.toml``), so a non-editable ``pip install .`` runs the tools too;
an editable install or a checkout reads the top-level directories next to the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir(name: str = "conf") -> str:
    """Absolute path of a config root (absolute: works from any working directory)."""
    packaged = _PACKAGE / name
    if packaged.is_dir():
        return str(packaged)
    return str(_PACKAGE.parent / name)


CONF_DIR = conf_dir()
CONTINUAL_CONF_DIR = conf_dir("conf_continual")

"""Console scripts ``fedkd-sim`` and ``fedkd-fcl``, with one clear line when Hydra is missing.

The base install (the device's ClientApp, docs/deploy.md) has no Hydra, Ray or W&B; the
simulation tools need the ``sim`` extra. Rather than a traceback ending in
``ModuleNotFoundError: No module named 'hydra'``, the scripts say what to install.
"""

from __future__ import annotations

import importlib
import sys

SIM_EXTRA_HINT = "pip install 'fedkd[sim]' (with -c constraints.txt for the tested versions)"


def _require_sim_extra(prog: str) -> None:
    missing = []
    for module in ("hydra", "omegaconf"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        print(
            f"{prog}: error: {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
            "installed; the simulation tools need "
            f"the sim extra: {SIM_EXTRA_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(1)


def sim() -> None:
    """``fedkd-sim``: :func:`simulations.run.main`."""
    _require_sim_extra("fedkd-sim")
    from simulations.run import main

    main()


def fcl() -> None:
    """``fedkd-fcl``: :func:`simulations.fcl.main`."""
    _require_sim_extra("fedkd-fcl")
    from simulations.fcl import main

    main()

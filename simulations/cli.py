"""Console scripts ``fedkd-sim``, ``fedkd-fcl`` and ``fedkd-compare``, with one clear line when
the sim extra is missing.

The base install (the device's ClientApp, docs/deploy.md) has no Hydra, Ray or W&B; the
simulation tools need the ``sim`` extra. Rather than a traceback ending in
``ModuleNotFoundError: No module named 'hydra'``, the scripts say what to install.
"""

from __future__ import annotations

import importlib
import sys

SIM_EXTRA_HINT = "pip install 'fedkd[sim]' (with -c constraints.txt for the tested versions)"


def _require_sim_extra(prog: str, modules: tuple[str, ...] = ("hydra", "omegaconf")) -> None:
    missing = []
    for module in modules:
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


def compare() -> None:
    """``fedkd-compare``: :func:`simulations.compare.main` (reads config.yaml, draws: sim)."""
    _require_sim_extra("fedkd-compare", ("yaml", "matplotlib"))
    from simulations.compare import main

    raise SystemExit(main())

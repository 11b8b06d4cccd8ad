"""Resume keeps the run's own configuration.

``fedkd-sim hydra.run.dir=D fd.resume=true`` continues the run in ``D`` exactly as it was
configured: the base is ``D/config.yaml`` (the resolved config the first run wrote), never the
defaults of today's command line. The overrides of the resumed invocation may only

* grow ``fd.num_rounds`` (more rounds of the same run),
* set ``fd.resume``,
* change logging and verbosity (``logging.*``, ``logging=<preset>``, ``simulation.verbose``);

an override that changes anything else is refused with one line naming the key. An override that
restates the run's own value is accepted (it changes nothing).

Which keys an override changes is found by composing twice with Hydra: the first run's overrides
(``D/.hydra/overrides.yaml``), and those followed by the resumed invocation's; the keys whose
values differ are the ones the new overrides touch (also for group overrides such as
``simulation=local``, which change many keys at once).

The run's ``config.yaml`` and ``.hydra/`` files are never overwritten: :func:`prepare_argv` asks
Hydra not to write ``.hydra/`` for a resume (``hydra.output_subdir=null``), and the resumed
invocation's overrides and effective config go to ``resume-<n>.overrides.yaml`` and
``resume-<n>.config.yaml``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fedkd.config import ConfigError

_RESUME_TRUE = re.compile(r"^\+{0,2}fd\.resume=(true|True|TRUE)$")
_RUN_DIR = re.compile(r"^\+{0,2}hydra\.run\.dir=(.+)$")
ALLOWED_EXACT = frozenset({"fd.resume", "fd.num_rounds", "simulation.verbose"})
ALLOWED_PREFIXES = ("logging.",)
_MISSING = object()


def resume_dir(argv: Sequence[str]) -> Path | None:
    """The run directory a command line resumes (``fd.resume=true`` and ``hydra.run.dir`` of a
    directory that holds a finished or crashed run's ``config.yaml``), else ``None``."""
    if not any(_RESUME_TRUE.match(arg) for arg in argv):
        return None
    dirs = [m.group(1) for arg in argv if (m := _RUN_DIR.match(arg))]
    if not dirs:
        return None
    run_dir = Path(dirs[-1].strip("'\""))
    return run_dir if (run_dir / "config.yaml").is_file() else None


DECLARED_GROUPS = ("experiment",)
"""Groups that were once added with ``+`` and are now declared in the defaults list
(``experiment: null``): Hydra refuses ``+experiment=x`` for a declared group."""
DECLARED_KEYS = ("fd.round_timeout", "strategy.codistill_min_certainty")
"""Keys that once needed ``+`` and are now declared (``conf/config.yaml``, the ``codistill``
strategy preset); Hydra refuses ``+key=`` for a key that exists."""


def current_spelling(override: str) -> str:
    """The one adapter for old spellings, used for the command line and a run's saved
    overrides alike: ``+experiment=debug`` → ``experiment=debug``; ``+fd.round_timeout=9`` →
    ``++fd.round_timeout=9`` (add or override: ``strategy=fd`` has no co-distillation keys);
    anything else unchanged."""
    if override.startswith("++"):
        return override
    for group in DECLARED_GROUPS:
        if override.startswith(f"+{group}="):
            return override[1:]
    for key in DECLARED_KEYS:
        if override.startswith(f"+{key}="):
            return f"+{override}"
    return override


def prepare_argv(argv: list[str]) -> list[str]:
    """The old ``+experiment=`` spelling accepted; for a resume, tell Hydra not to rewrite the
    run's ``.hydra/`` files."""
    argv = [current_spelling(a) for a in argv]
    if resume_dir(argv) is None or any(a.startswith("hydra.output_subdir=") for a in argv):
        return argv
    return [*argv, "hydra.output_subdir=null"]


def override_key(override: str) -> str:
    """``+fd.lr=0.1`` → ``fd.lr``; ``~logging`` → ``logging``; ``simulation=local`` → itself."""
    return override.lstrip("~+").split("=", 1)[0].strip()


def combine_overrides(first: Sequence[str], resumed: Sequence[str]) -> list[str]:
    """The first run's overrides, then the resumed invocation's (a key set again replaces the
    first run's entry, so ``experiment=debug`` given twice composes)."""
    keys = {override_key(o) for o in resumed}
    kept = [current_spelling(o) for o in first if override_key(o) not in keys]
    return kept + [current_spelling(o) for o in resumed]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a nested mapping by dotted path (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def _allowed(path: str) -> bool:
    return path in ALLOWED_EXACT or path.startswith(ALLOWED_PREFIXES)


def _set(tree: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    if value is _MISSING:
        node.pop(leaf, None)
    else:
        node[leaf] = value


def merge_resume(
    saved: dict[str, Any], base: dict[str, Any], requested: dict[str, Any], run_dir: str = ""
) -> dict[str, Any]:
    """The config a resume runs: ``saved`` with the allowed changes of ``requested`` over ``base``.

    ``saved`` is the run's ``config.yaml``; ``base`` composes the first run's overrides,
    ``requested`` those plus the resumed invocation's. Raises :class:`ConfigError` naming the
    first key whose change a resume refuses.
    """
    base_flat, requested_flat, saved_flat = flatten(base), flatten(requested), flatten(saved)
    effective = copy.deepcopy(saved)
    where = f" in {run_dir}/config.yaml" if run_dir else ""
    for path in sorted(set(base_flat) | set(requested_flat)):
        new = requested_flat.get(path, _MISSING)
        if new == base_flat.get(path, _MISSING):
            continue  # not touched by the resumed invocation's overrides
        old = saved_flat.get(path, _MISSING)
        if path == "fd.num_rounds" and isinstance(new, int) and isinstance(old, int):
            if new < old:
                raise ConfigError(
                    f"resume cannot change config key 'fd.num_rounds' from {old} to {new}: "
                    "a resumed run may only grow its number of rounds"
                )
        elif not _allowed(path):
            if new == old:
                continue  # restates the run's own value
            shown_old = "unset" if old is _MISSING else repr(old)
            shown_new = "unset" if new is _MISSING else repr(new)
            raise ConfigError(
                f"resume cannot change config key '{path}' ({shown_old}{where}, requested "
                f"{shown_new}); a resume keeps the run's configuration and may only grow "
                "fd.num_rounds or change logging and verbosity"
            )
        _set(effective, path, new)
    _set(effective, "fd.resume", True)
    return effective


def resume_config(
    run_dir: Path,
    resumed_overrides: Sequence[str],
    compose: Callable[[list[str]], dict[str, Any]],
) -> dict[str, Any]:
    """The effective config of resuming ``run_dir`` with ``resumed_overrides``.

    ``compose`` turns a list of overrides into the resolved config (without ``hydra``).
    """
    saved = _load(run_dir / "config.yaml")
    if not isinstance(saved, dict):
        raise ConfigError(f"cannot resume: {run_dir}/config.yaml is not a mapping")
    first_path = run_dir / ".hydra" / "overrides.yaml"
    first = _load(first_path) if first_path.is_file() else []
    if not isinstance(first, list):
        raise ConfigError(f"cannot resume: {first_path} is not a list of overrides")
    first = [str(o) for o in first]
    resumed = [o for o in resumed_overrides if not override_key(o).startswith("hydra.")]
    try:
        base = compose(list(first or []))
        requested = compose(combine_overrides(first or [], resumed))
    except ConfigError:
        raise
    except Exception as exc:  # Hydra's composition errors: one line, not a trace
        raise ConfigError(f"cannot resume {run_dir}: {exc}".splitlines()[0]) from None
    return merge_resume(saved, base, requested, str(run_dir))


def record_resume(
    run_dir: Path, resumed_overrides: Sequence[str], effective: dict[str, Any]
) -> Path:
    """Write ``resume-<n>.overrides.yaml`` and ``resume-<n>.config.yaml``; return the first."""
    n = 1 + len(list(run_dir.glob("resume-*.overrides.yaml")))
    path = run_dir / f"resume-{n}.overrides.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(list(resumed_overrides))))
    (run_dir / f"resume-{n}.config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(effective)))
    return path


def _load(path: Path) -> Any:
    """A YAML file as plain Python data (interpolations resolved)."""
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)

"""A forgetting study: several learners × several seeds over one task sequence.

For every seed the sequence is built (its class order / permutations follow the seed unless
fixed), every learner starts from the *same* initial weights and the same shuffling seed, and
after each task the model is tested on every task — one row of the accuracy matrix ``R``.
Before training, the randomly initialised model is tested too (``b`` for forward transfer).
Intransigence needs ``a*``, the accuracy of joint training on tasks ``0..k``: the diagonal of
the run of the learner named ``joint`` (run once more, unreported, when no learner is joint).

No Hydra here: :func:`run_study` takes a typed :class:`StudyConfig` and returns a JSON-ready
dict; ``simulations/continual_study.py`` adds Hydra, files, plots, W&B and progress bars.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fedkd.continual.metrics import FORGETTING_SINCE, ForgettingSince, mean_std, summarize
from fedkd.continual.network import build_net, evaluate_tasks
from fedkd.continual.registry import available_learners, build_learner
from fedkd.continual.tasks import SequenceConfig, TaskSequence, build_sequence
from fedkd.models import available_models
from fedkd.training import TrainConfig

__all__ = [
    "METRIC_KEYS",
    "REFERENCE_LABEL",
    "LearnerSpec",
    "StudyConfig",
    "TaskEvent",
    "run_learner",
    "run_study",
    "study_steps",
    "summary_table",
    "warm_up",
]

METRIC_KEYS = ("acc", "bwt", "fwt", "forgetting", "intransigence")
REFERENCE_LABEL = "_joint_reference"
"""Label of the extra joint run made only to get ``a*`` when no learner is ``joint``."""


@dataclass(frozen=True)
class LearnerSpec:
    """One learner of a study: a label for reports, a registered name and its options."""

    label: str
    """Key in metrics.json and plot file names (e.g. ``lwf`` or ``lwf_t2``)."""
    name: str
    """Name from :func:`fedkd.continual.available_learners` (``finetune``, ``lwf``, ``joint``)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Fields of the learner's config dataclass (e.g. ``LwFConfig``)."""


@dataclass(frozen=True)
class StudyConfig:
    """Everything a forgetting study needs. ``__post_init__`` raises ``ValueError``."""

    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    """The task sequence."""
    learners: tuple[LearnerSpec, ...] = (
        LearnerSpec("finetune", "finetune"),
        LearnerSpec("lwf", "lwf"),
        LearnerSpec("joint", "joint"),
    )
    """Learners to compare, in report order."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed: initial weights, shuffling and (by default) the sequence."""
    model: str = "mlp"
    """Registered fedkd model (:func:`fedkd.models.available_models`)."""
    model_options: Mapping[str, Any] = field(default_factory=dict)
    """Architecture options for the model builder (e.g. ``hidden_sizes``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Per-task optimisation: epochs per task, batch size, optimizer (fresh per task)."""
    device: str = "cpu"
    """Torch device; small models train faster on CPU."""
    forgetting_since: ForgettingSince = "start"
    """Rows the forgetting maximum runs over: ``start`` (every earlier row, as printed in
    Chaudhry et al., 2018) or ``learned`` (only rows after the task was learnt); see
    :func:`fedkd.continual.forgetting`."""

    def __post_init__(self) -> None:
        if not self.learners:
            raise ValueError("StudyConfig.learners must name at least one learner")
        labels = [spec.label for spec in self.learners]
        if len(set(labels)) != len(labels) or REFERENCE_LABEL in labels:
            raise ValueError(f"StudyConfig.learners labels must be unique, got {labels}")
        for spec in self.learners:
            if spec.name not in available_learners():
                raise ValueError(
                    f"StudyConfig.learners[{spec.label!r}].name must be one of "
                    f"{available_learners()}, got {spec.name!r}"
                )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"StudyConfig.seeds must be distinct and non-empty, got {self.seeds}")
        if self.model not in available_models():
            raise ValueError(
                f"StudyConfig.model must be one of {available_models()}, got {self.model!r}"
            )
        if self.sequence.task_count < 2:
            key = f"sequence.{self.sequence.task_count_key}"
            raise ValueError(
                f"StudyConfig.{key} gives {self.sequence.task_count} task(s); a forgetting "
                f"study needs at least 2 (BWT and forgetting compare tasks), got "
                f"{getattr(self.sequence, self.sequence.task_count_key)!r}"
            )
        if self.forgetting_since not in FORGETTING_SINCE:
            raise ValueError(
                f"StudyConfig.forgetting_since must be one of {FORGETTING_SINCE}, "
                f"got {self.forgetting_since!r}"
            )


@dataclass(frozen=True)
class TaskEvent:
    """Reported after each task of each run, for progress bars and loggers."""

    label: str
    seed: int
    task: int
    num_tasks: int
    accuracies: list[float]  # (T,) row R[task]
    train_loss: float
    seconds: float


def _reference_spec(cfg: StudyConfig) -> tuple[LearnerSpec, bool]:
    """The joint learner whose diagonal is a*, and whether it is one of the reported ones."""
    for spec in cfg.learners:
        if spec.name == "joint":
            return spec, True
    return LearnerSpec(REFERENCE_LABEL, "joint"), False


def study_steps(cfg: StudyConfig) -> int:
    """Number of :class:`TaskEvent` a study emits (for a progress bar's total)."""
    runs = len(cfg.learners) + (0 if _reference_spec(cfg)[1] else 1)
    return len(cfg.seeds) * runs * cfg.sequence.task_count


def run_learner(
    spec: LearnerSpec,
    sequence: TaskSequence,
    cfg: StudyConfig,
    seed: int,
    on_task: Callable[[TaskEvent], None] | None = None,
) -> dict[str, Any]:
    """Train one learner through ``sequence`` from the seed's initial weights.

    Returns
    -------
    dict
        ``acc_matrix`` (T×T list), ``random_init_acc`` (T list), ``seconds`` (training time).
    """
    learner = build_learner(spec.name, sequence.scenario, cfg.train, spec.options)
    net = build_net(cfg.model, sequence, seed=seed, **dict(cfg.model_options)).to(cfg.device)
    generator = torch.Generator().manual_seed(seed)
    random_init = evaluate_tasks(net, sequence)
    rows, seconds = [], 0.0
    for t in range(sequence.num_tasks):
        start = time.perf_counter()
        loss = learner.train_task(net, sequence, t, generator)
        seconds += time.perf_counter() - start
        rows.append(evaluate_tasks(net, sequence))
        if on_task is not None:
            on_task(
                TaskEvent(spec.label, seed, t, sequence.num_tasks, rows[-1].tolist(), loss, seconds)
            )
    return {
        "acc_matrix": np.stack(rows).tolist(),
        "random_init_acc": random_init.tolist(),
        "seconds": seconds,
    }


def warm_up(cfg: StudyConfig, sequence: TaskSequence, specs: Sequence[LearnerSpec]) -> None:
    """Train every learner of ``specs`` untimed through the first two tasks of a tiny copy
    of ``sequence`` (one batch of each task, one epoch).

    A process pays one-time costs the first time it trains — torch's lazy imports and
    first-call allocations in autograd and the optimizer, seconds on a cold start — and
    :func:`run_learner` would charge them all to whichever learner runs first. Running each
    learner's code path once here, on a forked RNG and throwaway weights, takes them out of
    every learner's ``seconds`` and leaves the study's numbers unchanged.
    """
    tiny = _tiny_sequence(sequence, rows=cfg.train.batch_size)
    train = dataclasses.replace(cfg.train, epochs=1)
    with torch.random.fork_rng(devices=[]):
        for spec in specs:
            learner = build_learner(spec.name, tiny.scenario, train, spec.options)
            net = build_net(cfg.model, tiny, seed=0, **dict(cfg.model_options)).to(cfg.device)
            generator = torch.Generator().manual_seed(0)
            for t in range(tiny.num_tasks):
                learner.train_task(net, tiny, t, generator)
                evaluate_tasks(net, tiny)


def _tiny_sequence(sequence: TaskSequence, rows: int) -> TaskSequence:
    """The first (at most) two tasks of ``sequence``, ``rows`` training examples each."""
    tasks = tuple(
        dataclasses.replace(task, train_x=task.train_x[:rows], train_y=task.train_y[:rows])
        for task in sequence.tasks[:2]
    )
    heads = sequence.head_sizes[: len(tasks)] if sequence.multi_head else sequence.head_sizes
    return dataclasses.replace(sequence, tasks=tasks, head_sizes=heads)


def _aggregate(runs: dict[str, list[dict[str, Any]]], labels: list[str]) -> dict[str, Any]:
    """Per-learner lists over seeds, and their mean ± std."""
    out: dict[str, Any] = {k: {} for k in ("acc_matrix", "random_init_acc", "seconds")}
    out.update({k: {} for k in METRIC_KEYS})
    out["intransigence_mean"] = {}
    out["summary"] = {}
    for label in labels:
        per_seed = runs[label]
        for key in ("acc_matrix", "random_init_acc", "seconds", *METRIC_KEYS, "intransigence_mean"):
            out[key][label] = [run[key] for run in per_seed]
        out["summary"][label] = {
            key: mean_std(out[key][label])
            for key in ("acc", "bwt", "fwt", "forgetting", "intransigence_mean")
        }
        out["summary"][label]["intransigence"] = out["summary"][label].pop("intransigence_mean")
    return out


def run_study(
    cfg: StudyConfig, *, on_task: Callable[[TaskEvent], None] | None = None
) -> dict[str, Any]:
    """Run every learner for every seed and compute the metrics.

    Parameters
    ----------
    cfg : StudyConfig
        Sequence, learners, seeds, model and training settings.
    on_task : callable, optional
        Called with a :class:`TaskEvent` after every task of every run.

    Returns
    -------
    dict
        JSON-ready: ``acc_matrix[label]`` is a list (one T×T matrix per seed, in ``seeds``
        order); ``acc``, ``bwt``, ``fwt``, ``forgetting`` map each label to a list of floats
        per seed; ``intransigence[label]`` to a list of per-task lists; ``summary[label][m]``
        is ``{"mean", "std", "n"}`` over seeds (intransigence: of its per-seed task mean);
        plus ``reference_acc`` (a* per seed), ``task_descriptions`` and the config.
    """
    reference, reported = _reference_spec(cfg)
    labels = [spec.label for spec in cfg.learners]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    reference_acc, descriptions = [], []
    for i, seed in enumerate(cfg.seeds):
        sequence = build_sequence(cfg.sequence, seed)
        descriptions.append(sequence.describe())
        if i == 0:  # one-time costs (lazy imports, first-call allocations) before any timing
            warm_up(cfg, sequence, [*cfg.learners, *([] if reported else [reference])])
        results = {
            spec.label: run_learner(spec, sequence, cfg, seed, on_task) for spec in cfg.learners
        }
        if not reported:
            results[reference.label] = run_learner(reference, sequence, cfg, seed, on_task)
        a_star = np.diag(np.asarray(results[reference.label]["acc_matrix"]))
        reference_acc.append(a_star.tolist())
        for label in labels:
            run = results[label]
            run.update(
                summarize(
                    run["acc_matrix"],
                    run["random_init_acc"],
                    a_star,
                    forgetting_since=cfg.forgetting_since,
                )
            )
            runs[label].append(run)
    out = _aggregate(runs, labels)
    out.update(
        learners=labels,
        seeds=list(cfg.seeds),
        num_tasks=len(descriptions[0]),
        scenario=sequence.scenario,
        sequence_name=sequence.name,
        reference=reference.label,
        reference_acc=reference_acc,
        task_descriptions=descriptions,
        config=_jsonable(asdict(cfg)),
    )
    return out


def summary_table(results: Mapping[str, Any]) -> str:
    """Markdown table of mean ± std over seeds for every learner of a :func:`run_study` result."""
    names = {
        "acc": "ACC",
        "bwt": "BWT",
        "fwt": "FWT",
        "forgetting": "forgetting",
        "intransigence": "intransigence",
    }
    lines = [
        f"{results['sequence_name']} ({results['scenario']}), {results['num_tasks']} tasks, "
        f"seeds {results['seeds']}",
        "",
        "| learner | " + " | ".join(names.values()) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for label in results["learners"]:
        cells = [
            f"{results['summary'][label][key]['mean']:+.3f} ± "
            f"{results['summary'][label][key]['std']:.3f}"
            for key in names
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Tuples to lists and mappings to dicts, recursively (for json.dump)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value

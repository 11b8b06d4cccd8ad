"""Federated continual learning tool: FedAvg or FD, with a local continual learner per client.

    fedkd-fcl                                  # conf_continual/fcl.yaml: 4 variants x 3 seeds
    python -m simulations.fcl continual/sequence=split_digits_class_il
    python -m simulations.fcl seeds=[0] rounds_per_task=2 '~fcl/variant@variants.fedavg_lwf'

Each variant federates one local learner (``fcl/variant``: FedAvg or FD, fine-tuning, LwF or
joint) over the same clients and task sequence, per seed. After every task the global model
(FedAvg's average, FD's student) and every client's model are tested on every task: their
accuracy matrices give ACC, BWT and forgetting. Bytes are counted per task.

**The federation runs in process, without Flower**: clients are Python objects, FedAvg
averages their weights with :func:`fedkd.continual.federated.average_state_dicts`, FD
aggregates their soft predictions with :func:`strategies.aggregation.aggregate` — the same
rules the Flower strategy uses — and distils the student with
:class:`fedkd.continual.federated.StudentDistiller`. Byte counts are the payload sizes the
messages would carry (weights both ways for FedAvg; float32 predictions up for FD).

Writes into the Hydra run directory: ``metrics.json``, ``config.yaml``, ``summary.md`` (the
table), ``heatmap_<variant>_student.png``, ``heatmap_<variant>_clients.png`` and
``forgetting_across_clients.png``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd import kd
from fedkd.config import ConfigError
from fedkd.continual import (
    LwFConfig,
    SequenceConfig,
    accuracy,
    backward_transfer,
    build_net,
    evaluate_tasks,
    forgetting,
    mean_std,
    plot_accuracy_matrix,
)
from fedkd.continual.federated import (
    CLIENT_LEARNERS,
    FCLClient,
    FederatedTasks,
    StudentDistiller,
    average_state_dicts,
    build_client_learner,
    federated_split,
    prediction_nbytes,
    weights_nbytes,
)
from fedkd.continual.training_data import TrainingData
from fedkd.models import available_models
from fedkd.training import TrainConfig
from simulations.continual_study import ConfigKeyError, _build, _plain
from simulations.hydra_config import exit_on_config_error
from simulations.paths import CONTINUAL_CONF_DIR
from strategies.aggregation import AggregationContext, aggregate, available_rules

__all__ = ["FCLConfig", "VariantSpec", "main", "run", "run_fcl", "summary_table", "to_fcl_config"]

Federation = Literal["fedavg", "fd"]


@dataclass(frozen=True)
class VariantSpec:
    """One compared method: how the federation shares, and what each client learns with."""

    label: str
    """Key in metrics.json and plot names (e.g. ``fd_lwf``)."""
    federation: Federation = "fd"
    """``fedavg``: clients train from the global weights each round, the server averages
    them. ``fd``: clients keep their own models and upload soft predictions on public inputs;
    the server distils a student from their aggregate."""
    learner: str = "lwf"
    """Each client's local continual learner: ``finetune``, ``lwf`` or ``joint``."""
    learner_options: Mapping[str, Any] = field(default_factory=dict)
    """``LwFConfig`` fields for ``lwf`` (e.g. ``lam``)."""
    server_lam: float = 0.0
    """FD only: λ of the student's LwF retention of its own earlier outputs; 0 = none."""

    def __post_init__(self) -> None:
        if self.federation not in ("fedavg", "fd"):
            raise ValueError(f"federation must be 'fedavg' or 'fd', got {self.federation!r}")
        if self.learner not in CLIENT_LEARNERS:
            raise ValueError(f"learner must be one of {CLIENT_LEARNERS}, got {self.learner!r}")
        if not self.server_lam >= 0:
            raise ValueError(f"server_lam must be >= 0, got {self.server_lam!r}")
        if self.federation == "fedavg" and self.server_lam != 0:
            raise ValueError("server_lam applies to FD's student only; FedAvg has none")


@dataclass(frozen=True)
class FCLConfig:
    """A federated continual-learning comparison. ``__post_init__`` raises ``ValueError``."""

    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    """The task sequence (``split``: task-IL or class-IL)."""
    variants: tuple[VariantSpec, ...] = (VariantSpec("fd_lwf", "fd", "lwf", server_lam=1.0),)
    """Methods to compare, in report order."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed: data split, partition, initial weights, shuffling."""
    num_clients: int = 5
    """Clients; every client takes part in every round."""
    partition: Literal["dirichlet", "iid"] = "dirichlet"
    """How each task's rows are shared out: label skew ~ Dir(alpha) inside a task, or IID."""
    alpha: float = 0.5
    """Dirichlet concentration inside a task."""
    min_rows: int = 8
    """Every client gets at least this many rows of every task."""
    public_fraction: float = 0.3
    """Share of the dataset held out as public, unlabelled inputs (grouped by task)."""
    rounds_per_task: int = 3
    """FedAvg rounds per task; FD clients train for the same number of local epochs."""
    local: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2))
    """Client optimisation per round (``epochs`` = local epochs per round)."""
    server: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
    """FD student distillation per task."""
    temperature: float = 2.0
    """FD: clients soften their predictions at T; the student is softened at T too."""
    aggregation: str = "mean"
    """FD aggregation rule (:func:`strategies.aggregation.available_rules`)."""
    query: Literal["seen", "current"] = "seen"
    """FD: clients predict on the public inputs of every task seen so far, or of the current
    task only (fewer bytes; the student then relies on its retention term for old tasks)."""
    model: str = "mlp"
    """Registered fedkd model, the same for clients and student."""
    model_options: Mapping[str, Any] = field(default_factory=dict)
    """Architecture options (e.g. ``hidden_sizes``)."""
    device: str = "cpu"
    """Torch device of every model."""

    def __post_init__(self) -> None:
        labels = [v.label for v in self.variants]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"FCLConfig.variants: need unique labels, got {labels}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"FCLConfig.seeds must be distinct and non-empty, got {self.seeds}")
        if self.sequence.kind != "split":
            raise ValueError(f"FCLConfig.sequence.kind must be 'split', got {self.sequence.kind!r}")
        if self.sequence.task_count < 2:
            raise ValueError("FCLConfig.sequence.num_tasks must be >= 2 (forgetting needs two)")
        checks = [
            ("num_clients", self.num_clients >= 1),
            ("rounds_per_task", self.rounds_per_task >= 1),
            ("min_rows", self.min_rows >= 1),
            ("alpha", self.alpha > 0),
            ("public_fraction", 0 < self.public_fraction < 1),
            ("temperature", self.temperature > 0),
            ("aggregation", self.aggregation in available_rules()),
            ("query", self.query in ("seen", "current")),
            ("partition", self.partition in ("dirichlet", "iid")),
            ("model", self.model in available_models()),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"FCLConfig.{name} is invalid: {getattr(self, name)!r}")


# --------------------------------------------------------------------------- one run


def _clients(
    spec: VariantSpec, tasks: FederatedTasks, cfg: FCLConfig, seed: int, local: TrainConfig
) -> list[FCLClient]:
    scenario = tasks.sequence.scenario
    return [
        FCLClient(
            seq,
            build_net(cfg.model, seq, seed=seed, **dict(cfg.model_options)).to(cfg.device),
            build_client_learner(spec.learner, scenario, local, spec.learner_options),
            seed=seed * 1000 + c,
        )
        for c, seq in enumerate(tasks.clients)
    ]


def _fedavg_task(student: torch.nn.Module, clients: list[FCLClient], t: int, cfg: FCLConfig) -> int:
    """``rounds_per_task`` FedAvg rounds on task ``t``; returns the bytes moved."""
    anchor = copy.deepcopy(student).requires_grad_(False)  # the federation before task t
    nbytes = 0
    for _ in range(cfg.rounds_per_task):
        states, weights = [], []
        for client in clients:
            client.net.load_state_dict(student.state_dict())
            client.train_task(t, anchor=anchor)  # type: ignore[arg-type]
            states.append(client.net.state_dict())
            weights.append(client.rows(t))
            nbytes += 2 * weights_nbytes(student)  # global model down, client model up
        student.load_state_dict(average_state_dicts(states, weights))
    return nbytes


def _fd_task(
    student: torch.nn.Module,
    clients: list[FCLClient],
    tasks: FederatedTasks,
    t: int,
    cfg: FCLConfig,
    distiller: StudentDistiller,
    generator: torch.Generator,
) -> int:
    """Clients learn task ``t`` locally, upload predictions, the student distils; bytes up."""
    seq = tasks.sequence
    for client in clients:
        client.train_task(t)
    queried = list(range(t + 1)) if cfg.query == "seen" else [t]
    inputs, teachers, heads, nbytes = [], [], [], 0
    for j in queried:
        head = seq.head_of(j)
        probs = [c.soft_predictions(tasks.public[j], head, cfg.temperature) for c in clients]
        nbytes += sum(prediction_nbytes(p) for p in probs)
        width = probs[0].shape[1]
        ctx = AggregationContext(
            num_examples=np.array([c.rows(j) for c in clients]),
            class_counts=np.stack(
                [np.bincount(c.sequence.tasks[j].train_y.numpy(), minlength=width) for c in clients]
            ),
        )
        teacher = aggregate(cfg.aggregation, torch.stack(probs).numpy(), ctx)  # (P_j, width)
        inputs.append(tasks.public[j])
        teachers.append(torch.as_tensor(teacher))
        heads.append(torch.full((len(teacher),), head, dtype=torch.long))
    x = torch.cat(inputs)
    data = TrainingData(x, torch.arange(len(x)), torch.cat(heads))  # y: row ids of the teacher
    distiller.distil(student, seq, t, data, torch.cat(teachers), generator)  # type: ignore[arg-type]
    return nbytes


def run_variant(spec: VariantSpec, tasks: FederatedTasks, cfg: FCLConfig, seed: int) -> dict:
    """One variant through the whole sequence for one seed: accuracy matrices and bytes."""
    seq = tasks.sequence
    student = build_net(cfg.model, seq, seed=seed, **dict(cfg.model_options)).to(cfg.device)
    fd_local = dataclasses.replace(cfg.local, epochs=cfg.local.epochs * cfg.rounds_per_task)
    local = cfg.local if spec.federation == "fedavg" else fd_local  # same epochs per task
    clients = _clients(spec, tasks, cfg, seed, local)
    lwf = LwFConfig(temperature=cfg.temperature, lam=spec.server_lam, t2_scaling=True)
    teacher_spec = kd.KDSpec(temperature=cfg.temperature, t2_scaling=True)
    distiller = StudentDistiller(seq.scenario, cfg.server, lwf, teacher_spec)
    generator = torch.Generator().manual_seed(seed)
    student_rows: list[list[float]] = []
    client_rows: list[list[list[float]]] = [[] for _ in clients]
    nbytes: list[int] = []
    start = time.perf_counter()
    for t in range(seq.num_tasks):
        if spec.federation == "fedavg":
            nbytes.append(_fedavg_task(student, clients, t, cfg))
        else:
            nbytes.append(_fd_task(student, clients, tasks, t, cfg, distiller, generator))
        student_rows.append(evaluate_tasks(student, seq).tolist())  # type: ignore[arg-type]
        for c, client in enumerate(clients):
            client_rows[c].append(evaluate_tasks(client.net, seq).tolist())
    return {
        "student": student_rows,  # (T, T)
        "clients": client_rows,  # (clients, T, T)
        "bytes_per_task": nbytes,
        "seconds": time.perf_counter() - start,
    }


def _scores(matrix: Any) -> dict[str, float]:
    return {
        "acc": accuracy(matrix),
        "bwt": backward_transfer(matrix),
        "forgetting": forgetting(matrix),
    }


def run_fcl(
    cfg: FCLConfig, *, on_run: Callable[[str, int, dict], None] | None = None
) -> dict[str, Any]:
    """Every variant for every seed; JSON-ready results.

    Returns
    -------
    dict
        ``runs[label]``: one dict per seed (``student`` T×T, ``clients`` clients×T×T,
        ``bytes_per_task``, ``seconds``, ``student_scores``, ``client_scores`` per client);
        ``summary[label]``: mean ± std over seeds of the student's ACC/BWT/forgetting, of the
        clients' (their mean per seed), and of the bytes per task.
    """
    runs: dict[str, list[dict]] = {v.label: [] for v in cfg.variants}
    descriptions = []
    for seed in cfg.seeds:
        tasks = federated_split(
            cfg.sequence,
            num_clients=cfg.num_clients,
            seed=seed,
            partition=cfg.partition,
            alpha=cfg.alpha,
            min_rows=cfg.min_rows,
            public_fraction=cfg.public_fraction,
        )
        descriptions.append(tasks.sequence.describe())
        for spec in cfg.variants:
            run = run_variant(spec, tasks, cfg, seed)
            run["student_scores"] = _scores(run["student"])
            run["client_scores"] = [_scores(m) for m in run["clients"]]
            runs[spec.label].append(run)
            if on_run is not None:
                on_run(spec.label, seed, run)
    summary = {}
    for label, per_seed in runs.items():
        entry: dict[str, Any] = {}
        for metric in ("acc", "bwt", "forgetting"):
            entry[f"student_{metric}"] = mean_std([r["student_scores"][metric] for r in per_seed])
            entry[f"clients_{metric}"] = mean_std(
                [np.mean([s[metric] for s in r["client_scores"]]) for r in per_seed]
            )
        entry["bytes_per_task"] = mean_std([np.mean(r["bytes_per_task"]) for r in per_seed])
        summary[label] = entry
    return {
        "variants": [v.label for v in cfg.variants],
        "seeds": list(cfg.seeds),
        "scenario": cfg.sequence.scenario,
        "num_tasks": cfg.sequence.task_count,
        "task_descriptions": descriptions,
        "runs": runs,
        "summary": summary,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=list)),
    }


def summary_table(results: Mapping[str, Any]) -> str:
    """Markdown table: student and client ACC / BWT / forgetting (mean ± std), bytes per task."""
    cols = [
        ("student_acc", "student ACC"),
        ("student_bwt", "student BWT"),
        ("student_forgetting", "student forgetting"),
        ("clients_acc", "clients ACC"),
        ("clients_forgetting", "clients forgetting"),
    ]
    lines = [
        f"{results['scenario']}, {results['num_tasks']} tasks, seeds {results['seeds']}",
        "",
        "| variant | " + " | ".join(name for _, name in cols) + " | KiB per task |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for label in results["variants"]:
        s = results["summary"][label]
        cells = [f"{s[k]['mean']:+.3f} ± {s[k]['std']:.3f}" for k, _ in cols]
        kib = s["bytes_per_task"]["mean"] / 1024
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {kib:,.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def write_plots(results: Mapping[str, Any], run_dir: Path) -> list[Path]:
    """Heatmaps with ± std (student over seeds; clients over clients × seeds) per variant,
    and forgetting across clients."""
    paths = []
    scenario = results["scenario"]
    for label in results["variants"]:
        per_seed = results["runs"][label]
        student = [r["student"] for r in per_seed]
        clients = [m for r in per_seed for m in r["clients"]]
        paths.append(
            plot_accuracy_matrix(
                student,
                run_dir / f"heatmap_{label}_student.png",
                title=f"{label} student",
                spread=True,
            )
        )
        paths.append(
            plot_accuracy_matrix(
                clients,
                run_dir / f"heatmap_{label}_clients.png",
                title=f"{label} clients ({scenario})",
                spread=True,
            )
        )
    paths.append(plot_client_forgetting(results, run_dir / "forgetting_across_clients.png"))
    return paths


def plot_client_forgetting(results: Mapping[str, Any], path: Path) -> Path:
    """One box per variant over every client and seed, the student's forgetting as dots."""
    from fedkd.plots import _pyplot, _save

    plt = _pyplot()
    labels = list(results["variants"])
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(labels), 4))
    per_client = [
        [s["forgetting"] for r in results["runs"][label] for s in r["client_scores"]]
        for label in labels
    ]
    ax.boxplot(per_client, tick_labels=labels)
    for i, label in enumerate(labels, start=1):
        student = [r["student_scores"]["forgetting"] for r in results["runs"][label]]
        ax.scatter([i] * len(student), student, color="red", zorder=3, label=None)
    ax.scatter([], [], color="red", label="student (one dot per seed)")
    ax.set(ylabel="forgetting", title=f"Forgetting across clients ({results['scenario']})")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- Hydra


_TOP_KEYS = {
    "sequence",
    "variants",
    "seeds",
    "clients",
    "rounds_per_task",
    "local",
    "server",
    "temperature",
    "aggregation_rule",
    "query",
    "model",
    "device",
    "threads",
    "plots",
}


def to_fcl_config(cfg: DictConfig) -> tuple[FCLConfig, dict[str, Any]]:
    """The composed Hydra config (``conf_continual/fcl.yaml``) as an :class:`FCLConfig` plus the
    tool's own settings (``threads``, ``plots``). Unknown keys and bad values raise
    :class:`ConfigKeyError` naming their path, before any work."""
    top = {str(k) for k in cfg} - {"hydra"}
    unknown = sorted(top - _TOP_KEYS)
    if unknown:
        raise ConfigKeyError(f"invalid config key '{unknown[0]}'; allowed: {sorted(_TOP_KEYS)}")
    variants = []
    for label, node in _plain(cfg.variants, "variants").items():
        values = _plain(node, f"variants.{label}")
        values["learner_options"] = _plain(values.get("learner_options"), f"variants.{label}")
        variant = _build(VariantSpec, {"label": str(label), **values}, f"variants.{label}")
        try:
            build_client_learner(
                variant.learner, cfg.sequence.scenario, TrainConfig(), variant.learner_options
            )
        except (TypeError, ValueError) as err:
            raise ConfigKeyError(f"invalid config under 'variants.{label}': {err}") from err
        variants.append(variant)
    clients = _plain(cfg.clients, "clients")
    model = _plain(cfg.model, "model")
    fcl = _build(
        FCLConfig,
        {
            "sequence": _build(SequenceConfig, _plain(cfg.sequence, "sequence"), "sequence"),
            "variants": tuple(variants),
            "seeds": tuple(int(s) for s in cfg.seeds),
            "num_clients": clients.get("num", 5),
            "partition": clients.get("partition", "dirichlet"),
            "alpha": clients.get("alpha", 0.5),
            "min_rows": clients.get("min_rows", 8),
            "public_fraction": clients.get("public_fraction", 0.3),
            "rounds_per_task": int(cfg.rounds_per_task),
            "local": _build(TrainConfig, _plain(cfg.local, "local"), "local"),
            "server": _build(TrainConfig, _plain(cfg.server, "server"), "server"),
            "temperature": float(cfg.temperature),
            "aggregation": str(cfg.aggregation_rule),
            "query": str(cfg.query),
            "model": model.get("name", "mlp"),
            "model_options": _plain(model.get("options"), "model.options"),
            "device": str(cfg.device),
        },
        "fcl",
    )
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigKeyError(f"invalid config key 'threads': {threads!r}; an int >= 1 or null")
    return fcl, {"threads": threads, "plots": bool(cfg.get("plots", True))}


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the comparison ``cfg`` describes; write metrics.json, summary.md, config.yaml, plots."""
    fcl, tool = to_fcl_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if tool["threads"] is not None:
        torch.set_num_threads(tool["threads"])

    def progress(label: str, seed: int, result: dict) -> None:
        s = result["student_scores"]
        print(
            f"{label} seed={seed}: student ACC {s['acc']:.3f} forgetting {s['forgetting']:.3f} "
            f"({result['seconds']:.1f} s)",
            flush=True,
        )

    results = run_fcl(fcl, on_run=progress)
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    table = summary_table(results)
    (run_dir / "summary.md").write_text(table + "\n")
    if tool["plots"]:
        write_plots(results, run_dir)
    print(table)
    print(f"run directory: {run_dir.resolve()}")
    return results


@hydra.main(config_path=CONTINUAL_CONF_DIR, config_name="fcl", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        to_fcl_config(cfg)
    except ConfigError as error:
        exit_on_config_error("fcl", error)
    run(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    """Console script ``fedkd-fcl`` and ``python -m simulations.fcl``: Hydra overrides as
    arguments; a bad value exits with status 2 and one line naming its key."""
    _hydra_main()


if __name__ == "__main__":
    main()

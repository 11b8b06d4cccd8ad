"""The one typed configuration of a federated-distillation run.

Flower's run-config is flat (``bool | int | float | str`` under kebab-case keys), Hydra's is
nested. Both meet here: :class:`FDConfig` is the typed, validated form that client and server
code read, :func:`to_run_config` / :func:`from_run_config` convert it to and from Flower's flat
mapping, and ``simulations`` converts Hydra's tree into it. Validation happens when the object
is built, so a bad value fails before any work, with a message that names the key and what is
allowed.

The module is pure Python: clients on small devices import it without Hydra or Ray.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from fedkd.compression import CODECS
from fedkd.data import available_datasets
from fedkd.kd import Divergence, KDSpec
from fedkd.models import available_models
from fedkd.privacy import MECHANISMS

PARTITION_SCHEMES = ("iid", "dirichlet", "pathological", "shard")
STRATEGIES = ("fd", "fedavg", "feddf")
OPTIMIZERS = ("sgd", "adam")
DIVERGENCES = ("kl", "reverse_kl", "symmetric_kl", "soft_ce", "mse")
# Aggregation rules live server-side (strategies.aggregation); their names are repeated here
# only so that a client-only install can validate a config. A test keeps the two in sync.
AGGREGATION_RULES = (
    "mean",
    "logit_mean",
    "weighted",
    "class_weighted",
    "confidence",
    "era",
    "sharpen",
    "median",
    "trimmed_mean",
    "filtered_mean",
    "selective",
    "certainty",
    "selective_era",
    "selective_class",
    "expguard",
)
CODISTILL_MODES = ("joint", "digest")
# Simulated Byzantine behaviours (fedkd.faults); repeated here for the same reason.
ATTACKS = ("uniform", "label_flip", "targeted", "peaked", "scaled", "lma", "cpa", "topk")

RunConfigValue = bool | int | float | str


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field whose help text travels in its metadata (used by the docs page)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class FDConfig:
    """Everything a federated-distillation (or FedAvg baseline) run needs.

    Field names map to Flower run-config keys by replacing ``_`` with ``-``
    (``num_rounds`` ↔ ``num-rounds``).
    """

    # --- federation -----------------------------------------------------------------------
    strategy: str = _doc(
        "'fd' (federated distillation), 'fedavg' (Flower's FedAvg baseline) or 'feddf' "
        "(FedAvg within architecture groups + ensemble distillation: sends weights)",
        default="fd",
    )
    num_rounds: int = _doc("Server rounds", default=10)
    num_clients: int = _doc("Clients (partitions) in the federation", default=10)
    fraction_train: float = _doc("Fraction of connected clients sampled per round", default=1.0)
    min_train_nodes: int = _doc("Minimum clients sampled per round", default=2)
    min_replies: int = _doc("Valid replies needed for a round to count", default=1)
    round_timeout: float = _doc("Seconds to wait for replies in a message phase", default=600.0)
    seed: int = _doc("Seed for data split, partitions, sampling and models", default=0)
    # --- data -----------------------------------------------------------------------------
    dataset: str = _doc("Dataset name (see fedkd.data.available_datasets())", default="digits")
    partition: str = _doc("iid | dirichlet | pathological | shard", default="dirichlet")
    alpha: float = _doc("Dirichlet concentration (smaller = more skewed)", default=0.5)
    classes_per_partition: int = _doc("Classes per client (pathological)", default=2)
    shards_per_partition: int = _doc("Shards per client (shard)", default=2)
    public_fraction: float = _doc(
        "Share of the data held out as the public unlabeled set", default=0.3
    )
    synthetic_train: int = _doc(
        "dataset=synthetic only: size of the private pool clients are partitioned from "
        "(0 = the synthetic-samples split's share; needs at least one sample per client); the "
        "public and test sets keep their synthetic-samples sizes, so a big population adds only "
        "its clients' data",
        default=0,
    )
    public_subset: int = _doc(
        "Public samples queried per round; 0 = all (DS-FL: fresh subset)", default=0
    )
    val_fraction: float = _doc(
        "Share of the private pool held out as the server's labelled validation set: what "
        "selects the reported round and tunes references (never the test set)",
        default=0.15,
    )
    synthetic_samples: int = _doc(
        "dataset=synthetic: total samples before splitting; the public and test sets scale with "
        "it (to grow only the private pool, use synthetic-train)",
        default=6000,
    )
    # --- models ---------------------------------------------------------------------------
    client_models: str = _doc(
        "Comma-separated model names, assigned round-robin by partition id", default="mlp,cnn"
    )
    student_model: str = _doc(
        "Server-side student architecture (FedAvg: every client's model)", default="cnn"
    )
    # --- local training -------------------------------------------------------------------
    local_epochs: int = _doc("Local supervised epochs per round", default=5)
    batch_size: int = _doc("Mini-batch size (clients and student)", default=32)
    lr: float = _doc("Client learning rate", default=0.1)
    optimizer: str = _doc("sgd | adam", default="sgd")
    # --- distillation ---------------------------------------------------------------------
    temperature: float = _doc(
        "Softmax temperature of the uploaded soft labels and of KD", default=2.0
    )
    aggregation: str = _doc(
        "Teacher aggregation rule (strategies.aggregation); 'selective_class': the student "
        "distils Selective-FD's support-masked votes weighted by each client's share of the "
        "class, co-distilling clients get the plain Selective-FD rows",
        default="selective_class",
    )
    era_temperature: float = _doc(
        "Temperature of era (softmax(mean/T): sharpens only below ~1/(2·classes)) and of "
        "sharpen (mean**(1/T): sharpens for any T < 1)",
        default=0.5,
    )
    trim_ratio: float = _doc("Share trimmed at each end by trimmed_mean", default=0.2)
    outlier_threshold: float = _doc(
        "filtered_mean drops replies farther from the coordinate-wise median than "
        "median + threshold × MAD of the clients' distances",
        default=3.0,
    )
    expguard_base: str = _doc(
        "Robust rule ExpGuard scores clients against (aggregation=expguard; strategies.expguard)",
        default="median",
    )
    expguard_eta: float = _doc(
        "ExpGuard's exponential-weights rate: weight ∝ exp(−eta × cumulative outlier excess)",
        default=10.0,
    )
    divergence: str = _doc(
        "KD divergence: kl | reverse_kl | symmetric_kl | soft_ce | mse", default="kl"
    )
    t2_scaling: bool = _doc("Multiply the KD loss by T² (Hinton et al. 2015)", default=True)
    server_epochs: int = _doc("Student distillation epochs per round on the public set", default=5)
    server_lr: float = _doc("Student learning rate", default=0.05)
    co_distillation: bool = _doc(
        "Send the teacher back to clients, which digest it (codistill-mode)", default=True
    )
    codistill_mode: str = _doc(
        "How clients digest the teacher: 'joint' (CE on private + weight × KD on public rows in "
        "every step) or 'digest' (FedMD: client-distill-epochs of KD, then local training)",
        default="joint",
    )
    codistill_weight: float = _doc("Weight of the KD term in joint co-distillation", default=1.0)
    codistill_min_certainty: float = _doc(
        "Teacher rows sent back to clients need certainty 1 - H/log(C) at least this (0 = "
        "all rows); near-uniform rows flatten clients and collapse co-distillation",
        default=0.25,
    )
    public_pretrain_epochs: int = _doc(
        "FedMD's transfer phase: clients first train this many epochs on the public set WITH "
        "its labels (a setting where the public data is labelled, so the public-labels "
        "reference is no longer a bound); 0 keeps the public set unlabelled",
        default=0,
    )
    client_distill_epochs: int = _doc(
        "Client distillation epochs toward the received teacher (digest mode)", default=1
    )
    support_quantile: float = _doc(
        "selective/certainty rules: quantile of private nearest-neighbour distances that sets "
        "a client's support radius (fedkd.support)",
        default=0.95,
    )
    codec: str = _doc("Uplink soft-label codec: none | fp16 | int8 | topk", default="none")
    topk: int = _doc("k for the topk codec", default=3)
    separate_query: bool = _doc(
        "Ask for soft labels in a second message phase instead of the train reply", default=False
    )
    # --- privacy (fedkd.privacy, docs/privacy.md) ------------------------------------------
    dp_mechanism: str = _doc(
        "none | central (client-level: clip each client's soft labels, noise their sum once at "
        "the server) | pate (clients vote; the server releases GNMax noisy-argmax labels) | "
        "dpsgd (clients train with DP-SGD, example-level; co-distillation then runs in digest "
        "order, on public rows only, whatever codistill-mode says)",
        default="none",
    )
    dp_noise_multiplier: float = _doc(
        "Noise in units of the L2 sensitivity (central, dpsgd); for pate, sigma: the std of "
        "the noise on each vote count",
        default=0.0,
    )
    dp_clip: float = _doc(
        "central: L2 clip of each soft-label row (rows have norm <= 1); dpsgd: of each "
        "example's gradient",
        default=1.0,
    )
    dp_delta: float = _doc("delta of the (epsilon, delta) the server reports", default=1e-5)
    dp_labels_per_round: int = _doc(
        "pate: new public rows labelled (and charged) per round; public-subset does not apply",
        default=20,
    )
    dp_max_epsilon: float = _doc(
        "Privacy budget: the run stops cleanly before a round would take epsilon above it "
        "(0 = no budget)",
        default=0.0,
    )
    # --- fault injection, simulation only (fedkd.faults) ---------------------------------
    fault_crash_train: float = _doc("Probability a client crashes when asked to train", default=0.0)
    fault_crash_query: float = _doc(
        "Probability a client crashes before sending its soft labels", default=0.0
    )
    fault_straggle: float = _doc(
        "Probability a client answers only after round-timeout (+1 s), i.e. too late", default=0.0
    )
    byzantine_fraction: float = _doc("Share of clients that are simulated attackers", default=0.0)
    byzantine_attack: str = _doc(
        "What attackers upload: uniform | label_flip | targeted | peaked | scaled | lma | cpa | "
        "topk (fedkd.faults)",
        default="label_flip",
    )
    byzantine_target: int = _doc("Class the 'targeted' attack pushes toward", default=0)
    explain_teacher: bool = _doc(
        "Write why the teacher says what it says each round to <run-dir>/explain/round-<r>.json "
        "and .png (provenance, client agreement and reliability, leave-one-out; "
        "strategies.explain); keeps every reply in memory instead of streaming",
        default=False,
    )
    # --- runtime --------------------------------------------------------------------------
    device: str = _doc("Server device: auto | cpu | cuda", default="auto")
    client_device: str = _doc("Client device: auto | cpu | cuda", default="cpu")
    torch_threads: int = _doc(
        "torch CPU threads per process; 0 = auto: OMP_NUM_THREADS when set (Ray sets it to a "
        "worker's client-cpus), else 1, which suits small models",
        default=0,
    )
    run_dir: str = _doc(
        "Directory for metrics.json, plots and checkpoints ('' = no files)", default=""
    )
    checkpoint: bool = _doc(
        "Save the server state to <run-dir>/checkpoint.pt after every round", default=True
    )
    resume: bool = _doc("Continue from <run-dir>/checkpoint.pt when it exists", default=False)
    client_checkpoints: bool = _doc(
        "Simulation only: clients also keep their state under <run-dir>/clients so a resumed run "
        "restarts them where they were (devices keep their own state)",
        default=False,
    )

    client_state: str = _doc(
        "Where a simulated client's model/optimizer state waits between rounds: 'context' "
        "ships it inside Flower's Context.state with every message (works on any cluster); "
        "'disk' keeps it in the worker's memory and in a file under client-state-dir keyed by "
        "run and node, so only a token travels (every worker must see that directory: one "
        "machine or a shared filesystem)",
        default="context",
    )
    client_state_dir: str = _doc(
        "Directory of client-state=disk ('' = <system temp>/fedkd-client-state)", default=""
    )
    live_client_mib: int = _doc(
        "Memory budget (MiB) per process for clients kept alive between messages "
        "(least recently used dropped first; 0 = rebuild every client from its state)",
        default=512,
    )
    clients_per_message: int = _doc(
        "Simulation only, strategy=fd: virtual clients (partitions) one Flower node serves per "
        "message (a cohort). The federation has num-clients / clients-per-message nodes; the "
        "server still samples virtual clients and validates, aggregates and counts each one's "
        "reply on its own; fewer, fatter messages cut the per-message cost of the runtime "
        "(docs/simulation.md). 1 = one client per node",
        default=1,
    )
    vectorize_cohort: bool = _doc(
        "Simulation only, clients-per-message > 1: train and query a cohort's homogeneous "
        "members (same architecture and private-set size, plain local training: no "
        "co-distillation teacher, DP or injected faults) in one batched torch.func call "
        "instead of one by one; the others take the per-member path. Same numbers up to "
        "float summation order (docs/simulation.md)",
        default=False,
    )

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def client_model_names(self) -> tuple[str, ...]:
        """The architectures clients cycle through (FedAvg needs one shared architecture)."""
        if self.strategy == "fedavg":
            return (self.student_model,)
        return tuple(name.strip() for name in self.client_models.split(",") if name.strip())

    @property
    def num_nodes(self) -> int:
        """Flower nodes (SuperNodes) of a simulated federation: one per cohort of
        ``clients_per_message`` virtual clients (``num_clients`` when it is 1)."""
        return self.num_clients // self.clients_per_message

    def model_for_partition(self, partition_id: int) -> str:
        """Round-robin architecture assignment: heterogeneous federations by config alone."""
        names = self.client_model_names
        return names[partition_id % len(names)]

    def kd_spec(self) -> KDSpec:
        """The distillation settings as the KD core's spec."""
        return KDSpec(
            temperature=self.temperature,
            divergence=cast(Divergence, self.divergence),  # validated in __post_init__
            t2_scaling=self.t2_scaling,
        )

    @property
    def optimizer_name(self) -> Literal["sgd", "adam"]:
        """``optimizer`` typed as :class:`fedkd.training.TrainConfig` wants it (validated)."""
        return cast(Literal["sgd", "adam"], self.optimizer)


CLIENT_STATES = ("context", "disk")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"invalid config key '{key}': {message}")


def _one_of(cfg: FDConfig, name: str, allowed: tuple[str, ...] | list[str]) -> None:
    value = getattr(cfg, name)
    _require(value in allowed, _key(name), f"got {value!r}; allowed: {', '.join(allowed)}")


def _validate(cfg: FDConfig) -> None:
    """Check every field; raise :class:`ConfigError` naming the first bad key."""
    _check_types(cfg)
    _one_of(cfg, "strategy", STRATEGIES)
    _one_of(cfg, "dataset", available_datasets())
    _one_of(cfg, "partition", PARTITION_SCHEMES)
    _one_of(cfg, "optimizer", OPTIMIZERS)
    _one_of(cfg, "aggregation", AGGREGATION_RULES)
    _one_of(cfg, "expguard_base", tuple(r for r in AGGREGATION_RULES if r != "expguard"))
    _one_of(cfg, "byzantine_attack", ATTACKS)
    _one_of(cfg, "divergence", DIVERGENCES)
    _one_of(cfg, "codistill_mode", CODISTILL_MODES)
    _one_of(cfg, "codec", tuple(CODECS))
    _one_of(cfg, "dp_mechanism", MECHANISMS)
    _one_of(cfg, "device", ("auto", "cpu", "cuda"))
    _one_of(cfg, "client_device", ("auto", "cpu", "cuda"))
    _one_of(cfg, "client_state", CLIENT_STATES)
    _require(cfg.live_client_mib >= 0, "live-client-mib", "must be >= 0 (0 = no reuse)")
    models = available_models()
    for name in (*cfg.client_model_names, cfg.student_model):
        _require(
            name in models,
            "client-models" if name != cfg.student_model else "student-model",
            f"unknown model {name!r}; allowed: {', '.join(models)}",
        )
    _require(len(cfg.client_model_names) > 0, "client-models", "needs at least one model name")
    positive = (
        "num_rounds",
        "num_clients",
        "min_train_nodes",
        "min_replies",
        "local_epochs",
        "batch_size",
        "server_epochs",
        "topk",
        "classes_per_partition",
        "shards_per_partition",
        "synthetic_samples",
    )
    for name in positive:
        _require(getattr(cfg, name) >= 1, _key(name), f"must be >= 1, got {getattr(cfg, name)}")
    for name in _FLOAT_FIELDS:
        value = getattr(cfg, name)
        _require(math.isfinite(value), _key(name), f"must be a finite number, got {value}")
    for name in (
        "lr",
        "server_lr",
        "temperature",
        "era_temperature",
        "alpha",
        "round_timeout",
        "outlier_threshold",
        "expguard_eta",
        "dp_clip",
    ):
        _require(getattr(cfg, name) > 0, _key(name), f"must be > 0, got {getattr(cfg, name)}")
    for name in (
        "fault_crash_train",
        "fault_crash_query",
        "fault_straggle",
        "byzantine_fraction",
    ):
        value = getattr(cfg, name)
        _require(0.0 <= value <= 1.0, _key(name), f"must be in [0, 1], got {value}")
    _require(
        cfg.dp_noise_multiplier >= 0,
        "dp-noise-multiplier",
        f"must be >= 0 (0 = off), got {cfg.dp_noise_multiplier}",
    )
    _require(0.0 < cfg.dp_delta < 1.0, "dp-delta", f"must be in (0, 1), got {cfg.dp_delta}")
    _validate_privacy(cfg)
    _require(cfg.byzantine_target >= 0, "byzantine-target", "must be a class index >= 0")
    _require(cfg.seed >= 0, "seed", f"must be >= 0 (numpy seeds are unsigned), got {cfg.seed}")
    _require(
        0.0 < cfg.fraction_train <= 1.0,
        "fraction-train",
        f"must be in (0, 1], got {cfg.fraction_train}",
    )
    _require(
        0.0 < cfg.public_fraction < 1.0,
        "public-fraction",
        f"must be in (0, 1), got {cfg.public_fraction}",
    )
    _require(
        0.0 <= cfg.trim_ratio < 0.5, "trim-ratio", f"must be in [0, 0.5), got {cfg.trim_ratio}"
    )
    _require(
        0.0 <= cfg.val_fraction < 1.0,
        "val-fraction",
        f"must be in [0, 1), got {cfg.val_fraction}",
    )
    _require(
        0.0 < cfg.support_quantile <= 1.0,
        "support-quantile",
        f"must be in (0, 1], got {cfg.support_quantile}",
    )
    _require(
        0.0 <= cfg.codistill_min_certainty <= 1.0,
        "codistill-min-certainty",
        f"must be in [0, 1], got {cfg.codistill_min_certainty}",
    )
    _require(
        cfg.codistill_weight >= 0,
        "codistill-weight",
        f"must be >= 0, got {cfg.codistill_weight}",
    )
    _require(cfg.public_subset >= 0, "public-subset", f"must be >= 0, got {cfg.public_subset}")
    _require(cfg.client_distill_epochs >= 0, "client-distill-epochs", "must be >= 0")
    _require(cfg.public_pretrain_epochs >= 0, "public-pretrain-epochs", "must be >= 0")
    _require(
        cfg.torch_threads >= 0, "torch-threads", f"must be >= 0 (0 = auto), got {cfg.torch_threads}"
    )
    _require(
        cfg.min_train_nodes <= cfg.num_clients,
        "min-train-nodes",
        f"samples {cfg.min_train_nodes} clients but only num-clients={cfg.num_clients} exist",
    )
    _require(cfg.synthetic_train >= 0, "synthetic-train", "must be >= 0 (0 = default)")
    _check_population(cfg)
    _check_cohorts(cfg)
    _require(
        cfg.min_replies <= cfg.num_clients,
        "min-replies",
        f"needs {cfg.min_replies} replies but only num-clients={cfg.num_clients} exist",
    )


def _check_population(cfg: FDConfig) -> None:
    """Every simulated client needs a private sample: fail before any work, naming the key.

    Only for ``synthetic``, whose pool size is known from the config; other datasets are
    checked when their partitions are built.
    """
    if cfg.dataset != "synthetic":
        return
    pool = synthetic_private_pool(
        cfg.synthetic_train, cfg.public_fraction, cfg.val_fraction, cfg.synthetic_samples
    )
    _require(
        cfg.num_clients <= pool,
        "num-clients",
        f"{cfg.num_clients} clients but the synthetic private pool holds {pool} samples "
        f"(after the validation share); raise synthetic-train "
        f"(e.g. synthetic-train={_train_for(cfg)})",
    )


def _check_cohorts(cfg: FDConfig) -> None:
    """``clients-per-message``: a whole number of virtual clients per node, FD only."""
    k = cfg.clients_per_message
    _require(k >= 1, "clients-per-message", f"must be >= 1, got {k}")
    _require(
        cfg.num_clients % k == 0,
        "clients-per-message",
        f"{k} does not divide num-clients={cfg.num_clients}: every node serves the same number "
        "of virtual clients",
    )
    _require(
        k == 1 or cfg.strategy == "fd",
        "clients-per-message",
        f"{k} > 1 needs strategy=fd ({cfg.strategy} runs Flower's own per-node weight exchange)",
    )
    _require(
        not cfg.vectorize_cohort or k > 1,
        "vectorize-cohort",
        "needs clients-per-message > 1 (it batches the members of one cohort message)",
    )


def synthetic_private_pool(
    train: int, public_fraction: float, val_fraction: float, samples: int = 6000
) -> int:
    """Private-pool size of ``dataset=synthetic`` after the validation share.

    ``train`` 0 means the ``samples``-sample dataset's own share; mirrors
    :func:`fedkd.data.synthetic.make_synthetic_splits` and
    :func:`fedkd.data.splits.with_validation` (same rounding), so check and split agree.
    """
    if not train:
        train = samples - round(samples * public_fraction) - round(samples * 0.2)
    return max(0, train - round(train * val_fraction))


def _train_for(cfg: FDConfig) -> int:
    """A ``synthetic-train`` that gives every client about ten private samples."""
    return math.ceil(10 * cfg.num_clients / max(1 - cfg.val_fraction, 1e-6))


def _validate_privacy(cfg: FDConfig) -> None:
    """A DP mechanism needs noise, and noise needs a mechanism: no silent half-configurations."""
    on = cfg.dp_mechanism != "none"
    _require(
        cfg.dp_noise_multiplier > 0 or not on,
        "dp-noise-multiplier",
        f"must be > 0 with dp-mechanism={cfg.dp_mechanism}",
    )
    _require(
        on or cfg.dp_noise_multiplier == 0,
        "dp-mechanism",
        "is none but dp-noise-multiplier > 0: name the mechanism (central | pate | dpsgd)",
    )
    _require(cfg.dp_max_epsilon >= 0, "dp-max-epsilon", f"must be >= 0, got {cfg.dp_max_epsilon}")
    _require(
        cfg.dp_labels_per_round >= 1,
        "dp-labels-per-round",
        f"must be >= 1, got {cfg.dp_labels_per_round}",
    )
    _require(
        cfg.dp_mechanism not in ("central", "pate") or cfg.strategy == "fd",
        "dp-mechanism",
        f"{cfg.dp_mechanism} applies to federated distillation (strategy=fd)",
    )
    _require(
        not (cfg.dp_mechanism in ("central", "pate") and cfg.explain_teacher),
        "explain-teacher",
        f"shows individual clients' soft labels, which dp-mechanism={cfg.dp_mechanism} keeps "
        "inside the server",
    )


def _check_types(cfg: FDConfig) -> None:
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        expected = _FIELD_TYPES[f.name]
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        _require(
            ok, _key(f.name), f"expected {expected.__name__}, got {type(value).__name__} {value!r}"
        )


_FIELD_TYPES: dict[str, type] = {
    f.name: {"bool": bool, "int": int, "float": float, "str": str}[str(f.type)]
    for f in fields(FDConfig)
}


_FLOAT_FIELDS = tuple(name for name, kind in _FIELD_TYPES.items() if kind is float)


def _key(field_name: str) -> str:
    return field_name.replace("_", "-")


def config_keys() -> list[str]:
    """All run-config keys, in declaration order."""
    return [_key(f.name) for f in fields(FDConfig)]


def to_run_config(cfg: FDConfig) -> dict[str, RunConfigValue]:
    """Flat Flower run-config (kebab-case keys) for ``pyproject.toml`` or ``--run-config``."""
    return {_key(f.name): getattr(cfg, f.name) for f in fields(cfg)}


def from_run_config(mapping: Mapping[str, Any], **overrides: Any) -> FDConfig:
    """Build an :class:`FDConfig` from a flat run-config, ignoring keys that are not ours.

    Flower merges the app's run-config with federation settings, so foreign keys are
    expected; a key that *looks* like ours but is misspelled cannot be told apart, which is
    why :func:`check_unknown_keys` exists for user-facing entry points.
    """
    by_key = {_key(f.name): f.name for f in fields(FDConfig)}
    values = {by_key[k]: _coerce(by_key[k], v) for k, v in mapping.items() if k in by_key}
    values.update(overrides)
    return FDConfig(**values)


def check_unknown_keys(mapping: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for keys that are not run-config keys of fedkd."""
    known = set(config_keys())
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )


def _coerce(name: str, value: Any) -> Any:
    """Flower passes TOML ints for floats (``lr = 1``): widen those; validation does the rest."""
    if _FIELD_TYPES[name] is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def replace(cfg: FDConfig, **changes: Any) -> FDConfig:
    """A validated copy with some fields changed."""
    return dataclasses.replace(cfg, **changes)

"""What a federated-distillation client does, without Flower.

``fedkd.client_app`` turns Flower messages into calls on :class:`FDClient` and back; this module
holds the machine-learning side (local training, co-distillation, soft predictions) so it can be
tested and reused without a Flower runtime.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fedkd import faults, state_blob
from fedkd import protocol as P
from fedkd.compression import encode_probs
from fedkd.config import FDConfig
from fedkd.data import DataSplits, load_splits, partition_indices
from fedkd.data.splits import with_validation
from fedkd.models import build_model
from fedkd.privacy import GaussianEvent, Ledger
from fedkd.privacy.dpsgd import round_event, train_dpsgd
from fedkd.privacy.pate import one_hot_votes
from fedkd.protocol import RoundRequest, public_hash, select_public
from fedkd.support import encode_support, support_scores
from fedkd.training import (
    TrainConfig,
    distill,
    evaluate,
    make_optimizer,
    predict_probs,
    resolve_device,
    resolve_threads,
    train_supervised,
    train_with_teacher,
)


@dataclass(frozen=True)
class ClientData:
    """One client's view: its private partition, the public inputs, the shared test set."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    public_x: torch.Tensor  # unlabeled
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    # Labels of public_x, only in a setting where the public data is labelled (FedMD's transfer
    # phase, ``public-pretrain-epochs`` > 0); None everywhere else.
    public_y: torch.Tensor | None = None
    # hash of public_x when already known (computed once per process), else "" = hash on use
    public_digest: str = ""

    @property
    def class_counts(self) -> list[int]:
        """Private label histogram: what class-aware aggregation rules weigh votes by."""
        return torch.bincount(self.train_y, minlength=self.num_classes).tolist()


@functools.lru_cache(maxsize=4)
def _splits(
    dataset: str,
    seed: int,
    public_fraction: float,
    val_fraction: float,
    sizes: tuple[int, int] = (6000, 0),
) -> DataSplits:
    # Cached per process: a Ray worker serves many clients of the same run.
    # sizes: dataset=synthetic's (synthetic-samples, synthetic-train); other datasets ignore it
    options = {}
    if dataset == "synthetic":
        options = {"num_samples": sizes[0], "num_train": sizes[1]}
    splits = load_splits(dataset, seed=seed, public_fraction=public_fraction, **options)
    return with_validation(splits, val_fraction, seed=seed)


@functools.lru_cache(maxsize=4)
def _partitions(cfg_key: tuple, num_partitions: int) -> list[np.ndarray]:
    dataset, seed, public_fraction, val_fraction, scheme, alpha, k, shards, sizes = cfg_key
    splits = _splits(dataset, seed, public_fraction, val_fraction, sizes)
    return partition_indices(
        splits.train_y.numpy(),
        num_partitions,
        scheme,
        alpha=alpha,
        classes_per_partition=k,
        shards_per_partition=shards,
        seed=seed,
        # Every client gets some data: Dirichlet redraws (a few times) until this holds.
        min_partition_size=min(5, len(splits.train_y) // (2 * num_partitions)),
    )


@functools.lru_cache(maxsize=4)
def _iid_order(cfg_key: tuple, pool: int) -> np.ndarray:
    """The permutation the IID partitioner cuts into blocks (see :func:`iid_partition`)."""
    return np.random.default_rng(cfg_key[1]).permutation(pool)


def iid_partition(order: np.ndarray, num_partitions: int, partition_id: int) -> np.ndarray:
    """Partition ``partition_id`` of the IID scheme, without building the other N - 1.

    ``partition_indices(..., "iid")`` permutes the rows with ``default_rng(seed)`` and lets
    Flower Datasets' ``IidPartitioner`` cut contiguous shards (``Dataset.shard(contiguous=True)``:
    the first ``len % N`` shards get one extra row). The same cut computed directly gives the
    same indices (a test checks it) in O(pool) per process instead of O(pool) Arrow work plus an
    import of ``datasets`` in every worker, which dominated a worker's time at 10,000 nodes.
    """
    size = len(order)
    if not 1 <= num_partitions <= size:
        raise ValueError(f"num_partitions must be in [1, {size}], got {num_partitions}")
    div, mod = divmod(size, num_partitions)
    start = div * partition_id + min(partition_id, mod)
    end = start + div + (1 if partition_id < mod else 0)
    return np.sort(order[start:end])


def partition_key(cfg: FDConfig) -> tuple:
    """The config fields that decide the partition (cache key shared by clients and server)."""
    return (
        cfg.dataset,
        cfg.seed,
        cfg.public_fraction,
        cfg.val_fraction,
        cfg.partition,
        cfg.alpha,
        cfg.classes_per_partition,
        cfg.shards_per_partition,
        (cfg.synthetic_samples, cfg.synthetic_train),
    )


def load_splits_for(cfg: FDConfig) -> DataSplits:
    """The run's dataset splits (cached per process)."""
    return _splits(
        cfg.dataset,
        cfg.seed,
        cfg.public_fraction,
        cfg.val_fraction,
        (cfg.synthetic_samples, cfg.synthetic_train),
    )


def client_partitions(cfg: FDConfig, num_partitions: int) -> list[np.ndarray]:
    """Index arrays into ``train_x`` for every partition (cached per process)."""
    if cfg.partition == "iid":  # the same cut without Arrow: 100,000 partitions in a second
        order = _iid_order(partition_key(cfg), len(load_splits_for(cfg).train_y))
        return [iid_partition(order, num_partitions, i) for i in range(num_partitions)]
    return _partitions(partition_key(cfg), num_partitions)


def client_partition(cfg: FDConfig, num_partitions: int, partition_id: int) -> np.ndarray:
    """Index array of one partition: IID is cut directly, other schemes build all N once per
    process (their assignment of one client depends on every other's)."""
    if cfg.partition == "iid":
        key = partition_key(cfg)
        return iid_partition(
            _iid_order(key, len(load_splits_for(cfg).train_y)), num_partitions, partition_id
        )
    return client_partitions(cfg, num_partitions)[partition_id]


@functools.lru_cache(maxsize=4)
def _public_digest(cfg_key: tuple) -> str:
    """The public set's hash, once per process (it is the same for every client of a run)."""
    splits = _splits(*cfg_key[:4], cfg_key[-1])
    return public_hash(splits.public_x.numpy())


def load_client_data(cfg: FDConfig, partition_id: int, num_partitions: int) -> ClientData:
    """The data of simulated/demo client ``partition_id`` out of ``num_partitions``."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} outside [0, {num_partitions})")
    splits = load_splits_for(cfg)
    idx = torch.as_tensor(client_partition(cfg, num_partitions, partition_id), dtype=torch.long)
    return ClientData(
        train_x=splits.train_x[idx],
        train_y=splits.train_y[idx],
        public_x=splits.public_x,
        test_x=splits.test_x,
        test_y=splits.test_y,
        num_classes=splits.num_classes,
        input_shape=splits.input_shape,
        public_y=splits.oracle_public_labels() if cfg.public_pretrain_epochs else None,
        public_digest=_public_digest(partition_key(cfg)),
    )


CURATED = ("central", "pate")
"""DP mechanisms whose noise the server adds: clients send their uploads and nothing else."""

Metrics = dict[str, int | float | list[int] | list[float]]
"""What a Flower ``MetricRecord`` holds (``dict`` is invariant, so the full value type)."""


class LocalScores(Protocol):
    """What :meth:`FDClient.record_training` reads of a local test: an
    :class:`~fedkd.training.EvalResult`, or a vectorized cohort's batched scores."""

    @property
    def accuracy(self) -> float: ...

    @property
    def loss(self) -> float: ...


@dataclass
class RoundOutcome:
    """What one client round produced, ready to be put into a reply."""

    payload: dict[str, np.ndarray] | None
    metrics: Metrics
    support: np.ndarray | None = None  # (subset,) uint8 support codes, when asked for


class FDClient:
    """A client's model, optimizer and data, driven one request at a time.

    The object is rebuilt for every message (Ray workers are not pinned to clients); its
    persistent part is :meth:`state_bytes`, which the ClientApp keeps in ``Context.state``.
    """

    def __init__(self, cfg: FDConfig, data: ClientData, model_name: str, partition_id: int) -> None:
        self.cfg = cfg
        self.data = data
        self.model_name = model_name
        self.partition_id = partition_id
        self.device = resolve_device(cfg.client_device)
        torch.set_num_threads(resolve_threads(cfg.torch_threads))
        # reproducible initial weights: the models are built on the CPU, so seeding its
        # generator is enough (torch.manual_seed also queues every accelerator's seeding,
        # 0.3 ms a client); a CUDA client keeps the full call
        seed = cfg.seed * 10_007 + partition_id
        if self.device.type == "cpu":
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)
        self.model = build_model(model_name, data.input_shape, data.num_classes).to(self.device)
        self.train_cfg = TrainConfig(
            epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            optimizer=cfg.optimizer_name,
        )
        self.optimizer = make_optimizer(self.model, self.train_cfg)
        # dp-mechanism=dpsgd: this client's own privacy ledger, kept in its state
        self.ledger = Ledger(cfg.dp_delta, cfg.dp_max_epsilon)

    # ------------------------------------------------------------ persistence
    restored: bool = False  # True once state came from Context.state or a checkpoint file
    fresh_blob: bytes | None = None  # state_bytes() of this round's checkpoint, while current

    def _checkpoint_path(self, server_round: int) -> Path | None:
        if not (self.cfg.client_checkpoints and self.cfg.run_dir):
            return None
        return (
            Path(self.cfg.run_dir) / "clients" / f"{self.partition_id}" / f"round-{server_round}.pt"
        )

    def restore_from_disk(self, server_round: int) -> None:
        """After a server crash, a simulated client's in-memory state is gone: reload the state
        it had at the end of the previous round (written by :meth:`save_to_disk`)."""
        path = self._checkpoint_path(server_round - 1)
        if not self.restored and path is not None and path.exists():
            self.load_state_bytes(path.read_bytes())

    def save_to_disk(self, server_round: int) -> None:
        """Keep this round's state (and the previous one; older files are removed)."""
        path = self._checkpoint_path(server_round)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        blob = self.state_bytes()
        tmp.write_bytes(blob)
        self.fresh_blob = blob  # the ClientApp keeps the same bytes: serialise once, not twice
        os.replace(tmp, path)
        stale = self._checkpoint_path(server_round - 2)
        if stale is not None:
            stale.unlink(missing_ok=True)

    def state_tree(self) -> dict[str, Any]:
        """Model, optimizer and privacy-ledger state: what :meth:`state_bytes` saves (and
        what a vectorized group stacks, :func:`fedkd.state_blob.stack`)."""
        return {
            "model": self.model.state_dict(),
            "optim": self.optimizer.state_dict(),
            "dp_events": torch.tensor(self.ledger.state_dict(), dtype=torch.float64),
        }

    def state_bytes(self) -> bytes:
        """Model and optimizer state as one blob (kept in ``Context.state`` between rounds)."""
        return state_blob.dumps(self.state_tree())  # raw tensors behind a JSON header: no pickle

    def load_state_bytes(self, blob: bytes) -> None:
        """Restore what :meth:`state_bytes` saved."""
        self.load_state(state_blob.loads(blob, map_location=self.device))

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_tree` (its tensors on this client's device)."""
        state_blob.restore_module(self.model, state["model"])
        state_blob.restore_optimizer(self.optimizer, state["optim"])
        if "dp_events" in state:
            self.ledger.load_state_dict(state["dp_events"].reshape(-1, 3).tolist())
        self.restored = True

    # ------------------------------------------------------------ work
    def _generator(self, server_round: int, salt: int = 0) -> torch.Generator:
        # Derived from (seed, client, round): a resumed run replays the same batches.
        seed = (self.cfg.seed * 1_000_003 + self.partition_id * 7_919 + server_round) * 4 + salt
        return torch.Generator().manual_seed(seed)

    def check_public(self, req: RoundRequest) -> None:
        """Refuse to answer on a public set that differs from the server's (hash mismatch)."""
        mine = self.data.public_digest or public_hash(self.data.public_x.numpy())
        if mine != req.public_hash or len(self.data.public_x) != req.public_size:
            raise ValueError(
                f"public set mismatch: server hash {req.public_hash} (n={req.public_size}), "
                f"client hash {mine} (n={len(self.data.public_x)})"
            )

    def round_cfg(self, epochs: int, lr: float) -> TrainConfig:
        """This client's training settings with the round's epochs and learning rate."""
        return TrainConfig(
            epochs=epochs,
            batch_size=self.train_cfg.batch_size,
            lr=lr,
            optimizer=self.train_cfg.optimizer,
        )

    def run_round(self, req: RoundRequest, *, train: bool) -> RoundOutcome:
        """Co-distil (optional), train locally (optional), then predict on the public query."""
        metrics = self.begin_round(req)
        if train:
            faults.crash(self.cfg, self.partition_id, req.server_round, "train")
            loss = self.train(req)
            result = evaluate(
                self.model, self.data.test_x, self.data.test_y, num_classes=self.data.num_classes
            )
            self.record_training(req, metrics, loss, result)
        return self.answer(req, metrics, train=train)

    # The steps of run_round, public so that fedkd.vectorized can train and predict a cohort's
    # models in one batched call and still give each client exactly this bookkeeping.
    def begin_round(self, req: RoundRequest) -> Metrics:
        """The reply's base metrics; reload a checkpoint after a server crash if needed."""
        metrics: Metrics = {
            "num-examples": len(self.data.train_y),
            "class-counts": self.data.class_counts,
            "partition-id": self.partition_id,
        }
        self.fresh_blob = None
        self.restore_from_disk(req.server_round)
        return metrics

    def record_training(
        self, req: RoundRequest, metrics: Metrics, loss: float, result: LocalScores
    ) -> None:
        """Put this round's training loss and local test scores in ``metrics``; checkpoint."""
        metrics["train-loss"] = loss
        metrics["test-accuracy"] = result.accuracy
        metrics["test-loss"] = result.loss
        self.save_to_disk(req.server_round)

    def answer(
        self,
        req: RoundRequest,
        metrics: Metrics,
        *,
        train: bool,
        probs: np.ndarray | None = None,
    ) -> RoundOutcome:
        """The round's outcome: metrics (suppressed under DP) and, when asked, soft labels.

        ``probs`` are this client's ``(rows, classes)`` softened predictions on the queried
        rows when already computed (a vectorized cohort); ``None`` computes them here.
        """
        payload = support = None
        if self.cfg.dp_mechanism in (*CURATED, "dpsgd"):
            metrics = self.suppressed(metrics)
        if req.with_predictions or not train:
            faults.crash(self.cfg, self.partition_id, req.server_round, "query")
            payload = self.predict(req, probs)
            if req.with_support:
                support = encode_support(select_public(self.support, req.public_indices))
        return RoundOutcome(payload=payload, metrics=metrics, support=support)

    def train(self, req: RoundRequest) -> float:
        """This round's local training; with a teacher, co-distillation in the configured mode.

        ``joint`` (default) adds ``codistill-weight`` × KD on the teacher's rows to every
        supervised step (:func:`fedkd.training.train_with_teacher`); ``digest`` is FedMD's
        order: ``distill-epochs`` of KD first, then plain local training (revisit).
        """
        if not self.restored and self.cfg.public_pretrain_epochs:
            self.pretrain_on_public()
        if self.cfg.dp_mechanism == "dpsgd":
            return self.train_private(req)
        cfg = self.round_cfg(req.local_epochs, req.lr)
        generator = self._generator(req.server_round)
        rows = 0 if req.teacher_indices is None else len(req.teacher_indices)
        has_teacher = req.teacher_probs is not None and req.teacher_indices is not None
        if has_teacher and self.cfg.codistill_mode == "joint" and rows:
            self.check_public(req)
            _set_lr(self.optimizer, req.lr)
            return train_with_teacher(
                self.model,
                self.data.train_x,
                self.data.train_y,
                self.data.public_x[torch.as_tensor(req.teacher_indices)],
                torch.as_tensor(req.teacher_probs),
                self.cfg.kd_spec(),
                cfg,
                lam=self.cfg.codistill_weight,
                optimizer=self.optimizer,
                generator=generator,
            )
        if has_teacher and self.cfg.codistill_mode == "digest":
            self._co_distil(req)
        _set_lr(self.optimizer, req.lr)
        return train_supervised(
            self.model,
            self.data.train_x,
            self.data.train_y,
            cfg,
            optimizer=self.optimizer,
            generator=generator,
        )

    def pretrain_on_public(self) -> float:
        """FedMD's transfer phase (Li & Wang 2019): before its first round, the client trains
        ``public-pretrain-epochs`` on the *labelled* public set, so every client starts from a
        model that knows all classes. Only where public labels exist (opt-in by config)."""
        if self.data.public_y is None:
            raise ValueError(
                "public-pretrain-epochs > 0 needs labelled public data; this client's public set "
                "has no labels"
            )
        cfg = self.round_cfg(self.cfg.public_pretrain_epochs, self.cfg.lr)
        return train_supervised(
            self.model,
            self.data.public_x,
            self.data.public_y,
            cfg,
            optimizer=make_optimizer(self.model, cfg),
            generator=self._generator(0, salt=3),
        )

    @functools.cached_property
    def support(self) -> np.ndarray:
        """``(public,)`` support scores of every public row (computed once per client)."""
        return support_scores(
            self.data.train_x, self.data.public_x, quantile=self.cfg.support_quantile
        )

    def predict(self, req: RoundRequest, probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Soft labels at temperature T on the queried public rows, encoded by the codec.

        Under ``dp-mechanism=pate`` only the argmax leaves the device (one vote per row); a
        simulated attacker then replaces what it uploads (both off by default). ``probs``:
        the softened predictions when a batched call already computed them.
        """
        self.check_public(req)
        if probs is None:
            inputs = select_public(self.data.public_x, req.public_indices)
            probs = predict_probs(self.model, inputs, temperature=req.temperature).numpy()
        if self.cfg.dp_mechanism == "pate":
            probs = one_hot_votes(probs)  # one vote per row; the server adds GNMax noise
        probs = faults.maybe_attack(self.cfg, self.partition_id, req.server_round, probs)
        return encode_probs(probs, req.codec, topk=req.topk)  # type: ignore[arg-type]

    def suppressed(self, metrics: Metrics) -> Metrics:
        """Under server-side DP the reply's metadata says nothing about the private data.

        Sample and class counts, losses and the local test accuracy would travel in the clear
        and reach metrics.json outside the DP release: they become zeros or are left out.
        """
        out: Metrics = {
            "num-examples": 0,
            "class-counts": [0] * self.data.num_classes,
            "partition-id": self.partition_id,
        }
        if self.cfg.dp_mechanism == "dpsgd":  # a DP model's test scores are post-processing
            out.update({k: v for k, v in metrics.items() if k in (P.TEST_ACCURACY, P.TEST_LOSS)})
            out[P.DP_EPSILON] = self.ledger.epsilon()
            out[P.DP_EPSILON_NEXT] = self.ledger.epsilon_after(self.dpsgd_event())
        return out

    def dpsgd_event(self, epochs: int | None = None) -> GaussianEvent:
        """What one round of this client's DP-SGD costs (``fedkd.privacy.dpsgd``)."""
        c = self.cfg
        epochs = c.local_epochs if epochs is None else epochs
        return round_event(len(self.data.train_y), c.batch_size, epochs, c.dp_noise_multiplier)

    def train_private(self, req: RoundRequest) -> float:
        """DP-SGD on the private data, if this client's budget allows another round; the
        digest step before it reads only public rows and DP outputs, so it costs nothing."""
        self._co_distil(req)
        event = self.dpsgd_event(req.local_epochs)
        if not self.ledger.allows(event):  # budget spent: the model stays as it is
            return float("nan")
        self.ledger.spend(event)
        return train_dpsgd(
            self.model,
            self.data.train_x,
            self.data.train_y,
            epochs=req.local_epochs,
            batch_size=self.cfg.batch_size,
            lr=req.lr,
            noise_multiplier=self.cfg.dp_noise_multiplier,
            max_grad_norm=self.cfg.dp_clip,
        )

    def _co_distil(self, req: RoundRequest) -> None:
        """FedMD/DS-FL co-distillation: first move toward last round's teacher."""
        if req.teacher_probs is None or req.teacher_indices is None or req.distill_epochs == 0:
            return
        if len(req.teacher_indices) == 0:
            return
        self.check_public(req)
        distill(
            self.model,
            self.data.public_x[torch.as_tensor(req.teacher_indices)],
            torch.as_tensor(req.teacher_probs),
            self.cfg.kd_spec(),
            self.round_cfg(req.distill_epochs, req.lr),
            optimizer=self.optimizer,
            generator=self._generator(req.server_round, salt=1),
        )

    def evaluate(self) -> Metrics:
        """Local model on the shared test set."""
        result = evaluate(
            self.model, self.data.test_x, self.data.test_y, num_classes=self.data.num_classes
        )
        return {
            "num-examples": result.num_examples,
            "test-accuracy": result.accuracy,
            "test-loss": result.loss,
        }


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The server may change the learning rate per round; the optimizer state stays."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_from_global(
    client: FDClient,
    global_state: dict[str, torch.Tensor],
    *,
    server_round: int,
    epochs: int,
    lr: float,
) -> tuple[dict[str, torch.Tensor], Metrics]:
    """The FedAvg baseline's client step: load the global weights, train locally, return them.

    Same model, data and local training as the FD client, so the two strategies differ only in
    what crosses the wire. The optimizer starts fresh each round, as in McMahan et al. (2017).
    """
    client.model.load_state_dict(global_state)
    cfg = client.round_cfg(epochs, lr)
    loss = train_supervised(
        client.model,
        client.data.train_x,
        client.data.train_y,
        cfg,
        optimizer=make_optimizer(client.model, cfg),
        generator=client._generator(server_round),
    )
    metrics: Metrics = {"num-examples": len(client.data.train_y), "train-loss": loss}
    return {k: v.detach().cpu() for k, v in client.model.state_dict().items()}, metrics

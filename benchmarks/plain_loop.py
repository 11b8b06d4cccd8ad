"""Federated distillation as a plain PyTorch loop in one process: the floor for overhead.

The same computation as one FD round through Flower (``strategies.fed_distill.FedDistill``
driving ``fedkd.client_app``), written with fedkd's functions directly and no Flower object:
every sampled client trains its model for the same epochs on the same batches (same
generators), predicts soft labels on the public set and encodes them with the round's codec;
the server decodes, aggregates with the configured rule, distils its student and evaluates it.
Clients are Python objects that live for the whole run, as in any single-process simulator.

What the loop leaves out is exactly what a federated runtime adds: messages, their
serialisation, reply validation, byte counting, per-message client restore/save through
``Context.state``, and scheduling. Because the seeds are the same, the student's accuracy after
each round must equal the Flower run's; the overhead benchmark checks that, so a drift in
either path shows up as a failed identity check rather than as a silently unfair ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedkd import protocol as P
from fedkd.client import FDClient, RoundOutcome, load_client_data, load_splits_for
from fedkd.compression import decode_probs
from fedkd.config import FDConfig
from fedkd.models import build_model
from fedkd.training import (
    TrainConfig,
    distill,
    evaluate,
    make_optimizer,
    resolve_device,
    resolve_threads,
)
from strategies.aggregation import SUPPORT_RULES, AggregationContext, aggregate

__all__ = ["PlainRound", "run_plain_fd"]


@dataclass(frozen=True)
class PlainRound:
    """One round of the plain loop: what the benchmarks compare with Flower's RoundRecord."""

    round: int
    seconds: float
    student_accuracy: float


@dataclass
class _Server:
    """The server's side of the loop: student, its optimizer, the sampling RNG."""

    cfg: FDConfig
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train_cfg: TrainConfig
    device: torch.device
    rng: np.random.Generator


def _make_server(cfg: FDConfig, input_shape: tuple[int, ...], num_classes: int) -> _Server:
    """Student and optimizer built exactly as ``strategies.server_app`` builds them."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    student = build_model(cfg.student_model, input_shape, num_classes).to(device)
    train_cfg = TrainConfig(
        epochs=cfg.server_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.server_lr,
        optimizer=cfg.optimizer,  # type: ignore[arg-type]
    )
    optimizer = make_optimizer(student, train_cfg)
    return _Server(cfg, student, optimizer, train_cfg, device, np.random.default_rng(cfg.seed))


def _sample(server: _Server, num_clients: int) -> list[int]:
    """FedDistill's seeded sampling (same RNG calls, so the same clients and student seed)."""
    cfg = server.cfg
    size = min(num_clients, max(int(num_clients * cfg.fraction_train), cfg.min_train_nodes))
    return sorted(int(i) for i in server.rng.choice(num_clients, size=size, replace=False))


def _public_indices(server: _Server, public_size: int) -> np.ndarray | None:
    """FedDistill's choice of queried public rows: all (None) or a fresh sorted subset."""
    k = server.cfg.public_subset
    if k == 0 or k >= public_size:
        return None
    return np.sort(server.rng.choice(public_size, size=k, replace=False))


def _request(
    cfg: FDConfig, server_round: int, indices: np.ndarray | None, public_size: int, digest: str
) -> P.RoundRequest:
    """The train request FedDistill sends (no co-distillation)."""
    return P.RoundRequest(
        server_round=server_round,
        local_epochs=cfg.local_epochs,
        lr=cfg.lr,
        temperature=cfg.temperature,
        codec=cfg.codec,
        topk=cfg.topk,
        public_indices=indices,
        public_size=public_size,
        public_hash=digest,
        with_predictions=True,
        distill_epochs=0,
        teacher_probs=None,
        teacher_indices=None,
    )


def _teacher(cfg: FDConfig, outcomes: list, num_classes: int) -> np.ndarray:
    """Decode every payload and aggregate with the configured rule: ``(samples, classes)``."""
    codec = cfg.codec  # validated by FDConfig
    probs = np.stack([decode_probs(o.payload, codec, num_classes) for o in outcomes])  # type: ignore[arg-type]
    ctx = AggregationContext(
        num_examples=np.array([o.metrics[P.NUM_EXAMPLES] for o in outcomes], dtype=np.float64),
        class_counts=np.array([o.metrics[P.CLASS_COUNTS] for o in outcomes], dtype=np.float64),
        era_temperature=cfg.era_temperature,
        trim_ratio=cfg.trim_ratio,
        outlier_threshold=cfg.outlier_threshold,
    )
    return aggregate(cfg.aggregation, probs, ctx)  # (clients, samples, classes) -> (samples, cl.)


class _ClientProcesses:
    """The plain loop's clients spread over ``processes`` worker processes (client ``i`` lives
    in worker ``i % processes`` for the whole run): the plain loop given as many cores as a
    Ray simulation, so wall times compare like for like. Spawned, not forked (torch's thread
    pools do not survive a fork); each worker builds its own clients once."""

    def __init__(self, cfg: FDConfig, processes: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        self.processes = processes
        self.pools = [
            ProcessPoolExecutor(1, ctx, initializer=_init_worker, initargs=(cfg, rank, processes))
            for rank in range(processes)
        ]
        for pool in self.pools:  # start-up (imports, client builds) before round 1
            pool.submit(_ready).result()

    def run(self, picked: list[int], request: P.RoundRequest) -> list[RoundOutcome]:
        """Every picked client's outcome, in ``picked`` order (the aggregation order)."""
        futures = [
            pool.submit(_work, [i for i in picked if i % self.processes == rank], request)
            for rank, pool in enumerate(self.pools)
        ]
        done: dict[int, RoundOutcome] = {}
        for future in futures:
            done.update(future.result())
        return [done[i] for i in picked]

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown()


_WORKER_CLIENTS: dict[int, FDClient] = {}


def _init_worker(cfg: FDConfig, rank: int, processes: int) -> None:
    torch.set_num_threads(resolve_threads(cfg.torch_threads))
    n = cfg.num_clients
    for i in range(rank, n, processes):
        _WORKER_CLIENTS[i] = FDClient(
            cfg, load_client_data(cfg, i, n), cfg.model_for_partition(i), i
        )


def _ready() -> int:
    return len(_WORKER_CLIENTS)


def _work(ids: list[int], request: P.RoundRequest) -> dict[int, RoundOutcome]:
    return {i: _WORKER_CLIENTS[i].run_round(request, train=True) for i in ids}


def run_plain_fd(
    cfg: FDConfig, on_round: Callable[[PlainRound], None] | None = None, processes: int = 1
) -> list[PlainRound]:
    """Run ``cfg.num_rounds`` FD rounds in this process; time each round like FedDistill does.

    ``on_round`` is called with each round as it ends (e.g. to sample CPU time). Supports
    plain FD with or without a public subset; not co-distillation or a separate query
    phase (``ValueError``). ``processes`` > 1 runs the clients in that many worker processes
    (:class:`_ClientProcesses`); the numbers are the same, only the cores differ.
    """
    if (
        cfg.co_distillation
        or cfg.separate_query
        or cfg.strategy != "fd"
        or cfg.aggregation in SUPPORT_RULES
    ):
        raise ValueError(
            "the plain loop mirrors plain FD only (no co-distillation, query phase or "
            "support scores)"
        )
    torch.set_num_threads(resolve_threads(cfg.torch_threads))
    splits = load_splits_for(cfg)
    n = cfg.num_clients
    workers = _ClientProcesses(cfg, processes) if processes > 1 else None
    clients = (
        []
        if workers is not None
        else [
            FDClient(cfg, load_client_data(cfg, i, n), cfg.model_for_partition(i), i)
            for i in range(n)
        ]
    )
    try:
        return _rounds(cfg, splits, clients, workers, on_round)
    finally:
        if workers is not None:
            workers.close()


def _rounds(
    cfg: FDConfig,
    splits: Any,
    clients: list[FDClient],
    workers: _ClientProcesses | None,
    on_round: Callable[[PlainRound], None] | None,
) -> list[PlainRound]:
    n = cfg.num_clients
    server = _make_server(cfg, splits.input_shape, splits.num_classes)
    digest = P.public_hash(splits.public_x.numpy())
    rounds: list[PlainRound] = []
    for server_round in range(1, cfg.num_rounds + 1):
        started = time.perf_counter()
        picked = _sample(server, n)
        indices = _public_indices(server, len(splits.public_x))
        request = _request(cfg, server_round, indices, len(splits.public_x), digest)
        if workers is not None:
            outcomes = workers.run(picked, request)
        else:
            outcomes = [clients[i].run_round(request, train=True) for i in picked]
        teacher = _teacher(cfg, outcomes, splits.num_classes)
        generator = torch.Generator().manual_seed(int(server.rng.integers(2**31)))
        inputs = splits.public_x if indices is None else splits.public_x[torch.as_tensor(indices)]
        distill(
            server.student,
            inputs,
            torch.as_tensor(teacher),
            cfg.kd_spec(),
            server.train_cfg,
            optimizer=server.optimizer,
            generator=generator,
            teacher_is_probs=True,
            teacher_temperature=1.0,
            device=server.device,
        )
        result = evaluate(
            server.student,
            splits.test_x,
            splits.test_y,
            num_classes=splits.num_classes,
            device=server.device,
        )
        rounds.append(PlainRound(server_round, time.perf_counter() - started, result.accuracy))
        if on_round is not None:
            on_round(rounds[-1])
    return rounds

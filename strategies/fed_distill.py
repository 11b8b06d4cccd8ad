"""FedDistill: a Flower strategy that aggregates soft predictions instead of weights.

Each round (Li & Wang 2019, FedMD; Itahara et al. 2021, DS-FL; Lin et al. 2020, FedDF's
server-side distillation)::

    sample clients → train (+ soft labels on the public query, one reply) → validate replies
    → aggregate into a teacher → distil the central student on the public inputs → evaluate

Clients send probabilities at temperature T for exactly the queried public rows, plus their
sample count and per-class counts; never weights. So client models may differ in architecture.
With ``co_distillation`` the teacher goes back to clients with the next round's request.

Flower's built-in ``Strategy.start`` knows only train and evaluate phases, so this strategy
overrides :meth:`start` with its own loop, written as one named step per arrow above.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedkd import protocol as P
from fedkd.config import FDConfig
from fedkd.training import TrainConfig, distill, evaluate, make_optimizer
from strategies import cohorts
from strategies.aggregation import (
    SHARPENED_BASE,
    STREAMABLE_RULES,
    STUDENT_ONLY_RULES,
    SUPPORT_RULES,
    AggregationContext,
    StreamingAggregator,
    aggregate,
    evidence,
    normalised_certainty,
    supported_rows,
)
from strategies.expguard import ExpGuard
from strategies.private import SERVER_SIDE, PrivateFold, ServerPrivacy
from strategies.receive import arrivals
from strategies.result import history_result
from strategies.validation import (
    Expected,
    Rejection,
    ValidReply,
    payload_limit,
    validate_reply,
)

log = logging.getLogger(__name__)


@dataclass
class RoundRecord:
    """One row of ``metrics.json``: what happened in a round, measured."""

    round: int
    student_accuracy: float
    student_loss: float
    client_accuracy: float | None  # mean local test accuracy of the clients that replied
    teacher_accuracy: float | None  # teacher argmax vs public labels (simulator diagnostic)
    bytes_up: int
    bytes_down: int
    cum_bytes: int
    valid_replies: int
    rejected: int
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # sampled clients that sent no reply before the timeout
    status: str = "ok"
    wall_seconds: float = 0.0
    missing_nodes: list[int] = field(default_factory=list)  # who timed out
    rejected_nodes: list[int] = field(default_factory=list)  # whose reply was an error or invalid
    dp_epsilon: float | None = None  # ε spent so far (docs/privacy.md; None with DP off)
    dp_delta: float | None = None  # the δ that ε holds at (None with DP off)
    student_val_accuracy: float | None = None  # on the server's labelled validation set
    teacher_coverage: float | None = None  # share of queried public rows some client supports
    teacher_certainty: float | None = None  # mean 1 - H/log C of the teacher rows (0: uniform)
    # aggregation=expguard: node id → {"weight", "score", "penalty"} this round (who was
    # down-weighted and why; see strategies.expguard)
    client_weights: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


RoundCallback = Callable[[RoundRecord], None]

TOO_FEW_NODES = "skipped: too few nodes"
"""Status prefix of a round whose nodes stayed below ``min-train-nodes`` for ``round-timeout``."""


class NotEnoughNodes(RuntimeError):
    """The federation stayed below ``min-train-nodes`` for a whole ``round-timeout``: the run
    cannot go on (the skipped round is recorded first; the ServerApp then exits non-zero)."""


Fold = StreamingAggregator | PrivateFold
"""What validated replies are folded into as they arrive (a rule's sums, or a DP release)."""

FOLDED = np.empty((0, 0), dtype=np.float32)
"""What a valid reply's ``probs`` becomes once folded into a :class:`StreamingAggregator`."""


class ReplyChecker:
    """One round's validation, one reply at a time: valid replies, rejections, senders seen.

    What :meth:`FedDistill.validate` does to a list, callable per reply as replies arrive
    (:meth:`FedDistill.exchange`). Each call reads the strategy's current expectations (the
    echo :meth:`FedDistill.exchange` set), so it can be made before the phase is sent.
    """

    def __init__(self, strategy: FedDistill, num_samples: int, fold: Fold | None) -> None:
        self.strategy = strategy
        self.num_samples = num_samples
        self.fold = fold
        self.valid: list[ValidReply] = []
        self.rejected: list[Rejection] = []
        self.seen: set[int] = set()

    def __call__(self, reply: Message) -> None:
        """Validate (and fold) ``reply``; log a rejection. Never raises on a bad reply."""
        node = int(reply.metadata.src_node_id)
        if node in self.seen:
            checked: ValidReply | Rejection = Rejection(
                node, "duplicate", "a second reply from this node in one round"
            )
        elif reply.has_error():
            checked = _error_rejection(reply)
        else:
            expected = self.strategy.expected(self.num_samples)
            checked = self.strategy._check_and_fold(node, reply, expected, self.fold)
        self.seen.add(node)
        if isinstance(checked, Rejection):
            if checked.reason != "client-error":  # errors were logged on arrival
                log.warning(
                    "rejected reply from node %d (%s): %s", node, checked.reason, checked.detail
                )
            self.rejected.append(checked)
        else:
            self.valid.append(checked)


@dataclass(frozen=True)
class PublicSet:
    """The server's copy of the public unlabeled inputs (labels only for diagnostics)."""

    inputs: torch.Tensor  # (public, *input_shape)
    oracle_labels: torch.Tensor | None = None  # simulator-only: never used for training

    @property
    def size(self) -> int:
        return len(self.inputs)


@dataclass(frozen=True)
class TestSet:
    """Labelled held-out data for the student."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int


class FedDistill(Strategy):
    """Federated distillation with a central student.

    Parameters
    ----------
    cfg : FDConfig
        Run configuration (sampling, temperature, aggregation rule, codec, student training).
    student : torch.nn.Module
        The central model, trained only by distillation on ``public.inputs``.
    public : PublicSet
        Public unlabeled inputs held by the server and every client (checked by hash).
    test : TestSet
        Labelled test set for the student's per-round evaluation (reported, never selected on).
    device : torch.device
        Where the student trains (CUDA when available by default).
    val : TestSet, optional
        The server's labelled validation set: what selects the reported round.
    """

    stream_replies: bool = True
    """Validate, fold and drop each reply as it is pulled (:mod:`strategies.receive`), so a
    mean-type rule's server peak does not grow with the clients. ``False``: Flower's
    ``send_and_receive``, a phase's replies held together until the round ends (the baseline
    ``benchmarks.bench_scaling`` measures against; the numbers are the same either way)."""

    def __init__(
        self,
        cfg: FDConfig,
        student: torch.nn.Module,
        public: PublicSet,
        test: TestSet,
        device: torch.device | None = None,
        val: TestSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.val = val if val is not None and len(val.y) else None
        self.device = device or torch.device("cpu")
        self.student = student.to(self.device)
        self.public = public
        self.public_hash = P.public_hash(public.inputs.numpy())
        self.test = test
        self.student_cfg = TrainConfig(
            epochs=cfg.server_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.server_lr,
            optimizer=cfg.optimizer_name,
        )
        self.optimizer = make_optimizer(self.student, self.student_cfg)
        self.rng = np.random.default_rng(cfg.seed)
        self.history: list[RoundRecord] = []
        self.cum_bytes = 0
        self.teacher: tuple[np.ndarray, np.ndarray] | None = None  # (probs, public indices)
        self.callbacks: list[RoundCallback] = []
        self._pending_indices: np.ndarray | None = None  # configure_train → aggregate_train
        self.privacy = ServerPrivacy(cfg)
        self._num_connected = 0  # nodes connected when this round sampled (central DP's m)
        self.stop_reason: str | None = None  # why the run ended before num-rounds, if it did
        # dp-mechanism=pate: the label released so far for each public row (-1: none yet)
        self.pate_labels = np.full(public.size, -1, dtype=np.int64)
        self.checkpoint_path: Path | None = None  # set by the ServerApp when checkpointing
        self._expected_echo: P.Echo | None = None  # what this round's replies must echo
        self.guard = (
            ExpGuard(cfg.expguard_base, cfg.expguard_eta, cfg.outlier_threshold)
            if cfg.aggregation == "expguard"
            else None
        )

    # ------------------------------------------------------------------ Strategy API
    def summary(self) -> None:
        """Log the configuration (Flower calls this at start)."""
        c = self.cfg
        log.info(
            "FedDistill: aggregation=%s T=%.2f codec=%s public=%d subset=%s co-distillation=%s",
            c.aggregation,
            c.temperature,
            c.codec,
            self.public.size,
            c.public_subset or "all",
            c.co_distillation,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Train requests (with the public query) for this round's sampled clients."""
        nodes = self.sample_nodes(grid)
        self._pending_indices = self.choose_public_indices()
        self._expected_echo = P.Echo(server_round, P.TRAIN, self.public_hash)
        content = P.request_content(self.make_request(server_round, self._pending_indices))
        return self.requests(content, P.TRAIN, nodes)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower-API form of one aggregation: validate, aggregate, distil; returns the student.

        :meth:`start` does not go through here (it also needs the query phase and byte
        accounting), but the pair ``configure_train``/``aggregate_train`` works on its own for
        users who drive strategies by hand.
        """
        indices = self._pending_indices
        num_samples = self.public.size if indices is None else len(indices)
        k = self.cfg.clients_per_message
        per_client = list(replies) if k == 1 else cohorts.expand(replies, k, None)
        valid, rejected = self.validate(per_client, num_samples)
        if len(valid) < self.cfg.min_replies:
            return None, MetricRecord({"valid-replies": len(valid), "rejected": len(rejected)})
        teacher = self.aggregate_teacher(valid)
        rows = self.supported(valid, num_samples)
        loss = self.distil_student(teacher[rows], _resolve(indices, self.public.size)[rows])
        metrics: dict[str, int | float | list[int] | list[float]] = {
            "valid-replies": len(valid),
            "rejected": len(rejected),
            "distill-loss": loss,
        }
        return ArrayRecord(self.student.state_dict()), MetricRecord(metrics)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FD evaluates the student centrally; no client evaluation phase."""
        return []

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """No client evaluation phase (see :meth:`configure_evaluate`)."""
        return None

    def start(  # type: ignore[override]
        self,
        grid: Grid,
        num_rounds: int | None = None,
        timeout: float | None = None,
        first_round: int = 1,
    ) -> Result:
        """Run rounds ``first_round .. num_rounds`` and return the final student weights."""
        num_rounds = num_rounds or self.cfg.num_rounds
        timeout = timeout or self.cfg.round_timeout
        self.summary()
        for server_round in range(first_round, num_rounds + 1):
            self.stop_reason = self.privacy_stop()
            if self.stop_reason is not None:
                log.warning("round %d not run: %s", server_round, self.stop_reason)
                print(self.stop_reason, flush=True)
                break
            record = self.run_round(grid, server_round, timeout)
            self.history.append(record)
            if self.checkpoint_path is not None:
                self.save_checkpoint(self.checkpoint_path)
            for callback in self.callbacks:
                callback(record)
            if record.status.startswith(TOO_FEW_NODES):
                raise NotEnoughNodes(f"round {server_round} {record.status}; ending the run")
        # Flower's Result with the metric history per round (strategies/result.py)
        return history_result(ArrayRecord(self.student.state_dict()), self.history)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly: student, optimizer, round, RNG,
        history, cumulative bytes and the last teacher (tensors and plain types only)."""
        return {
            "round": self.history[-1].round if self.history else 0,
            "student": self.student.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "history": [r.as_dict() for r in self.history],
            "cum_bytes": self.cum_bytes,
            "teacher": None if self.teacher is None else [torch.as_tensor(a) for a in self.teacher],
            "privacy": self.privacy.state_dict(),
            "pate_labels": torch.as_tensor(self.pate_labels),
            "expguard": None if self.guard is None else self.guard.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore :meth:`state_dict`; returns the last completed round."""
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.history = [RoundRecord(**r) for r in state["history"]]
        self.cum_bytes = int(state["cum_bytes"])
        teacher = state["teacher"]
        self.teacher = None if teacher is None else (teacher[0].numpy(), teacher[1].numpy())
        self.privacy.load_state_dict(state.get("privacy", {}))
        if state.get("pate_labels") is not None:
            self.pate_labels = state["pate_labels"].numpy().astype(np.int64)
        if self.guard is not None and state.get("expguard") is not None:
            self.guard.load_state_dict(state["expguard"])
        return int(state["round"])

    def save_checkpoint(self, path: str | Path) -> None:
        """Atomic: write a temporary file next to ``path``, then rename it over ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | Path) -> int:
        """Load a checkpoint written by :meth:`save_checkpoint`; returns its round."""
        return self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))

    # ------------------------------------------------------------------ one round
    def run_round(self, grid: Grid, server_round: int, timeout: float) -> RoundRecord:
        """One FD round as named steps; a bad reply or too few replies never raises."""
        started = time.perf_counter()
        nodes = self.sample_nodes(grid)
        indices = self.choose_public_indices()
        num_samples = len(indices) if indices is not None else self.public.size
        fold = self.streaming_aggregator(num_samples)
        check = self.checker(num_samples, fold) if self.stream_replies else None
        phases = self.collect(grid, server_round, nodes, indices, timeout, check)
        # held replies are validated (and folded) now; streamed ones were, as each arrived
        valid, rejected = self.validate(phases.replies, num_samples, fold=fold, checked=check)
        rejected = phases.train_errors + rejected
        self.cum_bytes += phases.bytes_up + phases.bytes_down
        record = RoundRecord(
            round=server_round,
            student_accuracy=float("nan"),
            student_loss=float("nan"),
            client_accuracy=_mean_metric(self.client_metrics(phases, valid), P.TEST_ACCURACY),
            teacher_accuracy=None,
            bytes_up=phases.bytes_up,
            bytes_down=phases.bytes_down,
            cum_bytes=self.cum_bytes,
            valid_replies=len(valid),
            rejected=len(rejected),
            rejected_reasons=_count_reasons(rejected),
            missing=len(phases.missing),
            missing_nodes=phases.missing,
            rejected_nodes=[r.node_id for r in rejected],
            dp_epsilon=self.account_privacy(phases.replies, num_samples),
            dp_delta=self.cfg.dp_delta if self.privacy.enabled else None,
        )
        if phases.missing:
            log.warning("round %d: no reply in time from nodes %s", server_round, phases.missing)
        if not nodes:
            record.status = (
                f"{TOO_FEW_NODES}: fewer than min-train-nodes={self.cfg.min_train_nodes} "
                f"connected within round-timeout={self.cfg.round_timeout:g}s"
            )
            log.error("round %d %s", server_round, record.status)
        elif len(valid) < self.cfg.min_replies:
            record.status = (
                f"skipped: {len(valid)} valid replies < min-replies={self.cfg.min_replies}"
            )
            log.error("round %d %s; the student is unchanged", server_round, record.status)
        else:
            teacher = fold.result() if fold is not None else self.aggregate_teacher(valid)
            self.explain_teacher(server_round, valid, indices)
            rows = fold.covered() if fold is not None else self.supported(valid, num_samples)
            record.client_weights = {} if self.guard is None else self.guard.last_report
            record.teacher_accuracy = self.teacher_accuracy(teacher, indices)
            record.teacher_coverage = float(rows.mean())
            record.teacher_certainty = float(normalised_certainty(teacher).mean())
            public_rows = _resolve(indices, self.public.size)[rows]
            if self.cfg.dp_mechanism == "pate":  # the student learns every label released so far
                self.distil_on_released_labels(teacher, public_rows)
            elif rows.any():  # Selective-FD: rows nobody supports teach nothing
                self.distil_student(teacher[rows], public_rows)
            certain = fold.evidence() if fold is not None else self.teacher_evidence(valid, teacher)
            sent = certain if self.cfg.aggregation in STUDENT_ONLY_RULES else teacher
            self.teacher = self.teacher_for_clients(sent[rows], public_rows, certain[rows])
        result = self.evaluate_student(self.test)
        record.student_accuracy, record.student_loss = result.accuracy, result.loss
        if self.val is not None:
            record.student_val_accuracy = self.evaluate_student(self.val).accuracy
        record.wall_seconds = time.perf_counter() - started
        return record

    def evaluate_student(self, data: TestSet) -> Any:
        """The student's accuracy and loss on a labelled set (test, or the validation set)."""
        return evaluate(
            self.student, data.x, data.y, num_classes=data.num_classes, device=self.device
        )

    def teacher_for_clients(
        self, teacher: np.ndarray, public_rows: np.ndarray, basis: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows co-distilling clients get: those the clients' evidence is certain about.

        Certainty is ``1 - H / log C`` (0 uniform, 1 one-hot) of ``basis``: the teacher before
        any sharpening (:func:`strategies.aggregation.evidence`), row for row.
        Digesting near-uniform rows is what collapsed co-distillation: it flattens every
        client's outputs, and the next teacher (the mean of flattened outputs) is flatter still,
        round after round, until all sit at chance (docs/recipes.md). Sharpening (``era``,
        ``sharpen``) does not create evidence: ERA at T = 0.1 turns a near-uniform mean into a
        confident, mostly wrong label, which collapsed DS-FL at α = 0.1 on 4 of 5 seeds until
        the gate looked at the mean. Rows under ``codistill-min-certainty`` stay home.
        """
        certainty = normalised_certainty(basis)  # (rows,)
        keep = certainty >= self.cfg.codistill_min_certainty
        return teacher[keep], public_rows[keep]

    def teacher_evidence(self, valid: list[ValidReply], teacher: np.ndarray) -> np.ndarray:
        """The stacked-replies form of :meth:`StreamingAggregator.evidence`: ``teacher`` itself
        unless the rule sharpens another rule's teacher (``era``, ``sharpen``, ...)."""
        if self.guard is not None or self.cfg.aggregation not in SHARPENED_BASE:
            return teacher
        probs = np.stack([v.probs for v in valid])  # (clients, samples, classes)
        return evidence(self.cfg.aggregation, probs, self.aggregation_context(valid))

    def supported(self, valid: list[ValidReply], num_samples: int) -> np.ndarray:
        """``(samples,)`` rows some valid reply supports (every row for rules without support)."""
        if self.cfg.aggregation not in SUPPORT_RULES:
            return np.ones(num_samples, dtype=bool)
        return supported_rows(_support_matrix(valid), num_samples)

    def collect(
        self,
        grid: Grid,
        server_round: int,
        nodes: list[int],
        indices: np.ndarray | None,
        timeout: float,
        check: ReplyChecker | None = None,
    ) -> _Phases:
        """The round's message phases: train (carrying the query), or train then query.

        ``check`` validates (and folds) the soft-label replies as they arrive; the phase that
        carries them then returns them without their arrays (see :meth:`exchange`).
        """
        train_req = self.make_request(
            server_round, indices, with_predictions=not self.cfg.separate_query
        )
        train_check = None if self.cfg.separate_query else check
        replies, down, up = self.exchange(grid, nodes, P.TRAIN, train_req, timeout, train_check)
        phases = _Phases(replies=replies, bytes_up=up, bytes_down=down)
        phases.missing = _silent(nodes, replies)
        if not self.cfg.separate_query:
            return phases
        phases.train_metrics = [_metrics_of(r) for r in replies if not r.has_error()]
        # Only clients that trained are queried; their train-phase errors are rejections here.
        phases.train_errors = [_error_rejection(r) for r in replies if r.has_error()]
        answered = [r.metadata.src_node_id for r in replies if not r.has_error()]
        query_req = self.make_request(server_round, indices, with_predictions=True, teacher=False)
        phases.replies, d2, u2 = self.exchange(grid, answered, P.QUERY, query_req, timeout, check)
        phases.bytes_down, phases.bytes_up = down + d2, up + u2
        phases.missing = sorted(phases.missing + _silent(answered, phases.replies))
        return phases

    def client_metrics(self, phases: _Phases, valid: list[ValidReply]) -> list[dict[str, Any]]:
        """Training metrics of this round's clients: from the valid replies, or, when soft
        labels came in a separate query, from every train reply that was not an error."""
        return phases.train_metrics if self.cfg.separate_query else [v.metrics for v in valid]

    def account_privacy(self, replies: list[Message], num_samples: int) -> float | None:
        """Charge this round's releases to the ledger; ε so far (None with DP off)."""
        if not self.privacy.enabled:
            return None
        ok = [r for r in replies if not r.has_error()]
        reports = {int(r.metadata.src_node_id): _dp_report(_metrics_of(r)) for r in ok}
        reported = {node: pair for node, pair in reports.items() if pair is not None}
        return self.privacy.account(
            [int(r.metadata.src_node_id) for r in ok], num_samples, reported
        )

    def privacy_stop(self) -> str | None:
        """Why the next round must not run: the budget, or (pate) no public row left to label."""
        rows = self.cfg.public_subset or self.public.size
        if self.cfg.dp_mechanism == "pate":
            rows = self.cfg.dp_labels_per_round
            rows = min(rows, int((self.pate_labels < 0).sum()))
            if rows == 0:
                return "every public row has a released label: nothing left to query; stopping"
        return self.privacy.budget_stop(rows)

    def distil_on_released_labels(self, teacher: np.ndarray, public_rows: np.ndarray) -> None:
        """PATE's student: remember this round's noisy-argmax labels, distil on all so far."""
        self.pate_labels[public_rows] = teacher.argmax(axis=1)
        labelled = np.flatnonzero(self.pate_labels >= 0)
        one_hot = np.eye(self.test.num_classes, dtype=np.float32)[self.pate_labels[labelled]]
        self.distil_student(one_hot, labelled)

    def sample_nodes(self, grid: Grid) -> list[int]:
        """Seeded sampling of ``max(fraction × connected, min_train_nodes)`` nodes.

        Waits (as Flower's strategies do) until ``min_train_nodes`` nodes are connected, but
        at most ``round_timeout`` seconds: then it returns no nodes, and the round is recorded
        as skipped (:data:`TOO_FEW_NODES`), after which :meth:`start` ends the run.
        With cohorts the same draw runs over virtual clients (:meth:`clients_of`): sampling,
        ``min-train-nodes`` and central DP's Poisson rate stay per client.
        """
        deadline = time.monotonic() + self.cfg.round_timeout
        nodes = self.clients_of(grid)
        while len(nodes) < self.cfg.min_train_nodes:
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "only %d nodes connected after waiting round-timeout=%gs, %d needed",
                    len(nodes),
                    self.cfg.round_timeout,
                    self.cfg.min_train_nodes,
                )
                return []
            log.warning(
                "waiting for nodes: %d connected, %d needed", len(nodes), self.cfg.min_train_nodes
            )
            time.sleep(min(1.0, left))
            nodes = self.clients_of(grid)
        self._num_connected = len(nodes)
        if self.privacy.poisson_sampling():  # central DP: amplification needs Poisson sampling
            keep = self.rng.random(len(nodes)) < self.privacy.sample_rate
            return [n for n, k in zip(nodes, keep, strict=True) if k]
        size = min(
            len(nodes), max(int(len(nodes) * self.cfg.fraction_train), self.cfg.min_train_nodes)
        )
        # Sample positions, not ids: node ids are uint64 and would lose bits in a NumPy array.
        picked = self.rng.choice(len(nodes), size=size, replace=False)
        return [nodes[i] for i in sorted(picked)]

    def clients_of(self, grid: Grid) -> list[int]:
        """The connected clients, sorted: node ids, or with cohorts (``clients-per-message``
        K > 1) the virtual clients ``node·K + slot`` (:mod:`strategies.cohorts`)."""
        nodes = sorted(grid.get_node_ids())
        k = self.cfg.clients_per_message
        return nodes if k == 1 else cohorts.virtual_clients(nodes, k)

    def choose_public_indices(self) -> np.ndarray | None:
        """All public rows (None), or a fresh random subset per round (DS-FL)."""
        k = self.cfg.public_subset
        if self.cfg.dp_mechanism == "pate":  # label rows without a released label yet
            k = self.cfg.dp_labels_per_round
            unlabelled = np.flatnonzero(self.pate_labels < 0)
            return np.sort(self.rng.choice(unlabelled, size=min(k, len(unlabelled)), replace=False))
        if k == 0 or k >= self.public.size:
            return None
        return np.sort(self.rng.choice(self.public.size, size=k, replace=False))

    def make_request(
        self,
        server_round: int,
        indices: np.ndarray | None,
        *,
        with_predictions: bool = True,
        teacher: bool = True,
    ) -> P.RoundRequest:
        """The round's request; carries last round's teacher when co-distilling."""
        send_teacher = teacher and self.cfg.co_distillation and self.teacher is not None
        return P.RoundRequest(
            server_round=server_round,
            local_epochs=self.cfg.local_epochs,
            lr=self.cfg.lr,
            temperature=self.cfg.temperature,
            codec=self.cfg.codec,
            topk=self.cfg.topk,
            public_indices=indices,
            public_size=self.public.size,
            public_hash=self.public_hash,
            with_predictions=with_predictions,
            distill_epochs=self.cfg.client_distill_epochs if send_teacher else 0,
            teacher_probs=self.teacher[0] if send_teacher else None,  # type: ignore[index]
            teacher_indices=self.teacher[1] if send_teacher else None,  # type: ignore[index]
            with_support=self.needs_support,
        )

    @property
    def needs_support(self) -> bool:
        """Support scores are asked for only by support rules, and never under DP: they come
        from private nearest-neighbour distances and no mechanism covers them (the rule then
        treats every client as supporting every row: the mean)."""
        return self.cfg.aggregation in SUPPORT_RULES and self.cfg.dp_mechanism == "none"

    def exchange(
        self,
        grid: Grid,
        nodes: list[int],
        message_type: str,
        req: P.RoundRequest,
        timeout: float,
        check: ReplyChecker | None = None,
    ) -> tuple[list[Message], int, int]:
        """Send one request to every node; return replies, bytes down and bytes up.

        Each reply is attributed to the node its request went to (``reply_to_message_id``):
        the SuperLink answers for a dead SuperNode with an error whose sender is the SuperLink
        itself, and that error must name the dead node, not node 1. Replies to no request of
        this call are dropped. :meth:`validate` (or ``check``) checks the replies' echo of
        this request.

        With :attr:`stream_replies`, replies are taken batch by batch as they are pulled
        (:func:`strategies.receive.arrivals`); with ``check`` each is then validated and
        folded at once and returned without its arrays (soft labels, support): sender, error,
        metrics and meta are all the rest of the round reads. So a phase's encoded replies
        are never all held, only one pull's worth.
        """
        self._expected_echo = P.Echo(req.server_round, message_type, req.public_hash)
        if not nodes:
            return [], 0, 0
        content = P.request_content(req)
        messages = self.requests(content, message_type, nodes)
        # bytes per client as each would send its own message (cohorts are a simulation device)
        down = P.wire_nbytes(content) * len(nodes)
        k = self.cfg.clients_per_message
        groups = cohorts.by_node(nodes, k) if k > 1 else None
        batches = (
            arrivals(grid, messages, timeout)
            if self.stream_replies
            else iter([list(grid.send_and_receive(messages, timeout=timeout))])
        )
        replies: list[Message] = []
        up = 0
        for batch in batches:
            arrived = _attribute(batch, messages)
            del batch
            if groups is not None:  # one reply per virtual client from here on
                arrived = cohorts.expand(arrived, k, groups)
            for r in arrived:
                if r.has_error():
                    log.warning(
                        "node %s replied with an error: %s", r.metadata.src_node_id, r.error.reason
                    )
                else:
                    up += P.wire_nbytes(r.content)
                if check is not None:
                    check(r)
                    _drop_arrays(r)
                replies.append(r)
            del arrived
        return replies, down, up

    def requests(self, content: Any, message_type: str, clients: list[int]) -> list[Message]:
        """The messages that ask ``clients``: one each, or one per node for its cohort."""
        k = self.cfg.clients_per_message
        if k == 1:
            return [
                Message(content=content, message_type=message_type, dst_node_id=n) for n in clients
            ]
        return cohorts.requests(content, message_type, cohorts.by_node(clients, k))

    def streaming_aggregator(self, num_samples: int) -> Fold | None:
        """Running sums for the configured rule when it is a mean-type rule, else ``None``
        (``median``, ``trimmed_mean`` and ``filtered_mean`` need every reply at once).
        Server-side DP replaces the rule by its own fold (``strategies.private.PrivateFold``)."""
        if self.cfg.dp_mechanism in SERVER_SIDE:
            expected = self.privacy.sample_rate * self._num_connected
            return PrivateFold(self.cfg, num_samples, self.test.num_classes, expected)
        if self.cfg.aggregation not in STREAMABLE_RULES or self.cfg.explain_teacher:
            return None  # explaining the teacher needs every reply (strategies.explain)
        return StreamingAggregator(
            self.cfg.aggregation,
            num_samples,
            self.test.num_classes,
            era_temperature=self.cfg.era_temperature,
        )

    def validate(
        self,
        replies: list[Message],
        num_samples: int,
        *,
        fold: Fold | None = None,
        checked: ReplyChecker | None = None,
    ) -> tuple[list[ValidReply], list[Rejection]]:
        """Check each reply; log and count every rejection (the round goes on).

        ``checked``: a :meth:`checker` that already saw ``replies`` as they arrived
        (:meth:`exchange`); its outcome is returned as it is.

        With ``fold``, each valid reply's decoded soft labels go into the running sums at once
        and are not kept (its ``probs`` becomes :data:`FOLDED`): the server never holds the
        decoded ``(clients, samples, classes)`` stack for a mean-type rule. Given a list, the
        encoded replies are all held regardless: :meth:`run_round` instead checks each reply
        as it arrives (a :meth:`checker` passed to :meth:`exchange`).

        Nothing raises out of here: a reply that fails to fold is a rejection
        (``fold-failed``), and a node's second reply in a round is one too (``duplicate``).
        After :meth:`exchange`, replies must echo this round, message type and public hash.
        """
        if checked is not None:
            return checked.valid, checked.rejected
        check = self.checker(num_samples, fold)
        for reply in replies:
            check(reply)
        return check.valid, check.rejected

    def checker(self, num_samples: int, fold: Fold | None = None) -> ReplyChecker:
        """A :class:`ReplyChecker` for this round's replies (see :meth:`validate`)."""
        return ReplyChecker(self, num_samples, fold)

    def expected(self, num_samples: int) -> Expected:
        """What a valid reply must look like now (after :meth:`exchange`: with its echo)."""
        echo = self._expected_echo
        return Expected(
            num_samples=num_samples,
            num_classes=self.test.num_classes,
            codec=self.cfg.codec,
            with_support=self.needs_support,
            max_payload_bytes=payload_limit(num_samples, self.test.num_classes),
            server_round=None if echo is None else echo.server_round,
            message_type=None if echo is None else echo.message_type,
            public_hash=None if echo is None else echo.public_hash,
        )

    def _check_and_fold(
        self, node: int, reply: Message, expected: Expected, fold: Fold | None
    ) -> ValidReply | Rejection:
        """One reply validated (and folded into ``fold``); any failure becomes a rejection."""
        checked = validate_reply(node, reply.content, expected)
        if isinstance(checked, Rejection) or fold is None:
            return checked
        try:
            fold.add(
                checked.probs,
                num_examples=checked.num_examples,
                class_counts=checked.class_counts,
                support=checked.support,
            )
        except Exception as exc:  # the reply passed validation but cannot be aggregated
            return Rejection(node, "fold-failed", f"{type(exc).__name__}: {exc}")
        return replace(checked, probs=FOLDED)

    def aggregate_teacher(self, valid: list[ValidReply]) -> np.ndarray:
        """Teacher distributions from the valid replies, by the configured rule."""
        probs = np.stack([v.probs for v in valid])  # (clients, samples, classes)
        ctx = self.aggregation_context(valid)
        if self.guard is not None:  # stateful: weights kept per node across rounds
            return self.guard.aggregate(probs, [v.node_id for v in valid], ctx)
        # the stack is ours: an order statistic may reorder it rather than copy it
        ctx = replace(ctx, scratch=True)
        return aggregate(self.cfg.aggregation, probs, ctx)  # (samples, classes)

    def aggregation_context(self, valid: list[ValidReply]) -> AggregationContext:
        """What the rule needs besides the predictions: counts, support, hyper-parameters."""
        return AggregationContext(
            num_examples=np.array([v.num_examples for v in valid], dtype=np.float64),
            class_counts=np.stack([v.class_counts for v in valid]),
            era_temperature=self.cfg.era_temperature,
            trim_ratio=self.cfg.trim_ratio,
            outlier_threshold=self.cfg.outlier_threshold,
            support=_support_matrix(valid) if self.cfg.aggregation in SUPPORT_RULES else None,
        )

    def explain_teacher(
        self, server_round: int, valid: list[ValidReply], indices: np.ndarray | None
    ) -> Path | None:
        """``<run-dir>/explain/round-<r>.json`` (and ``.png``): why the teacher says what it
        says — per-sample provenance, per-client agreement and reliability, leave-one-out
        effects (:func:`strategies.explain.explain_round`), judged against the public labels
        when the simulator knows them. Off unless ``explain-teacher``; never raises."""
        if not (self.cfg.explain_teacher and self.cfg.run_dir and valid):
            return None
        from strategies.explain import explain_round, plot_explanation
        from strategies.reporting import write_json_atomic

        rule = self.cfg.expguard_base if self.guard is not None else self.cfg.aggregation
        oracle = self.public.oracle_labels
        reference = None if oracle is None else oracle.numpy()[_resolve(indices, self.public.size)]
        path = Path(self.cfg.run_dir) / "explain" / f"round-{server_round}.json"
        try:
            report = explain_round(
                np.stack([v.probs for v in valid]),
                self.aggregation_context(valid),
                rule,
                [str(v.node_id) for v in valid],
                reference=reference,
            )
            write_json_atomic(path, {"round": server_round, **report})
            plot_explanation(report, path.with_suffix(".png"))
        except Exception as exc:  # a diagnostic must never stop the run
            log.warning("round %d: teacher explanation failed: %s", server_round, exc)
            return None
        return path

    def distil_student(self, teacher: np.ndarray, indices: np.ndarray | None) -> float:
        """KD of the student toward the teacher on the given public rows (the one KD core)."""
        inputs = P.select_public(
            self.public.inputs, None if indices is None else torch.as_tensor(indices)
        )
        generator = torch.Generator().manual_seed(int(self.rng.integers(2**31)))
        return distill(
            self.student,
            inputs,
            torch.as_tensor(teacher),
            self.cfg.kd_spec(),
            self.student_cfg,
            optimizer=self.optimizer,
            generator=generator,
            teacher_is_probs=True,
            teacher_temperature=1.0,
            device=self.device,
        )

    def teacher_accuracy(self, teacher: np.ndarray, indices: np.ndarray | None) -> float | None:
        """Diagnostic: how often the teacher's argmax is right (only when the simulator knows)."""
        oracle = self.public.oracle_labels
        if oracle is None:
            return None
        labels = oracle.numpy() if indices is None else oracle.numpy()[indices]
        return float(np.mean(teacher.argmax(axis=1) == labels))


def _support_matrix(valid: list[ValidReply]) -> np.ndarray:
    """``(clients, samples)`` support scores of replies validated for a support rule."""
    return np.stack([v.support for v in valid if v.support is not None])


def _resolve(indices: np.ndarray | None, size: int) -> np.ndarray:
    return np.arange(size) if indices is None else indices


@dataclass
class _Phases:
    """What a round's message phases brought back (see :meth:`FedDistill.collect`)."""

    replies: list[Message]  # the replies that should carry soft labels
    bytes_up: int
    bytes_down: int
    missing: list[int] = field(default_factory=list)  # sampled, but silent until the timeout
    train_metrics: list[dict[str, Any]] = field(default_factory=list)
    train_errors: list[Rejection] = field(default_factory=list)  # separate-query mode only


def _attribute(received: list[Message], sent: list[Message]) -> list[Message]:
    """Replies attributed to the node each was sent to; replies to nothing we sent dropped.

    An error reply from another sender (the SuperLink's "node unavailable", src node 1) is
    re-issued as an error reply to the original request, so its sender is the node asked.
    """
    by_id = {m.metadata.message_id: m for m in sent}
    out: list[Message] = []
    for reply in received:
        request = by_id.get(reply.metadata.reply_to_message_id)
        if request is None:
            log.warning(
                "dropped a reply from node %s to no request of this round",
                reply.metadata.src_node_id,
            )
            continue
        node = int(request.metadata.dst_node_id)
        if int(reply.metadata.src_node_id) == node:
            out.append(reply)
            continue
        reason = (
            str(reply.error.reason)
            if reply.has_error()
            else f"reply came from node {reply.metadata.src_node_id}, not the node asked"
        )
        code = int(reply.error.code) if reply.has_error() else 0
        out.append(Message(Error(code=code, reason=reason), reply_to=request))
    return out


def _drop_arrays(reply: Message) -> None:
    """Let go of a checked reply's arrays (soft labels, support scores) in place: sender,
    error, metrics and meta are all the round reads after validation."""
    if reply.has_error():
        return
    kept: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        k: v for k, v in reply.content.items() if not isinstance(v, ArrayRecord)
    }
    reply.content = RecordDict(kept)


def _silent(nodes: list[int], replies: list[Message]) -> list[int]:
    answered = {int(r.metadata.src_node_id) for r in replies}
    return [int(n) for n in nodes if int(n) not in answered]


def _metrics_of(reply: Message) -> dict[str, Any]:
    record = reply.content.metric_records.get(P.METRICS)
    return dict(record) if record is not None else {}


def _dp_report(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """A dpsgd client's (ε so far, ε after one more round), when it sent sane numbers."""
    now, nxt = metrics.get(P.DP_EPSILON), metrics.get(P.DP_EPSILON_NEXT)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (now, nxt)):
        return None
    pair = (float(now), float(nxt))  # type: ignore[arg-type]
    return pair if all(v >= 0 and not np.isnan(v) for v in pair) else None


def _error_rejection(reply: Message) -> Rejection:
    return Rejection(int(reply.metadata.src_node_id), "client-error", str(reply.error.reason))


def _mean_metric(metrics: list[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over the replies that report it sanely: a missing, non-numeric,
    non-finite or out-of-range value (``protocol.METRIC_RANGES``) is ignored and logged."""
    low, high = P.METRIC_RANGES.get(key, (-np.inf, np.inf))
    values = []
    for m in metrics:
        if key not in m:
            continue
        raw = m[key]
        value = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        if value is None or not np.isfinite(value) or not low <= value <= high:
            log.warning("ignored %s=%r: not a finite number in [%g, %g]", key, raw, low, high)
            continue
        values.append(value)
    return float(np.mean(values)) if values else None


def _count_reasons(rejected: list[Rejection]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejected:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts

"""FedDF (Lin et al., NeurIPS 2020, "Ensemble Distillation for Robust Model Fusion in Federated
Learning"): FedAvg within each architecture group, then ensemble distillation on public inputs.

A *hybrid* baseline, labelled as such everywhere: clients upload **weights** (as in FedAvg),
and every byte of them is counted. Each round:

1. every sampled client receives its architecture group's current weights
   (``arrays.<model>``; a node the server has not heard from yet receives every group's, since
   the server learns a node's architecture from its first reply), trains locally and returns
   its weights;
2. the server averages the weights within each group (weighted by examples, as FedAvg);
3. the *ensemble* — every received client model, whatever its architecture — predicts on the
   public inputs; the teacher is the mean of their logits (the paper's AVGLOGITS);
4. each group's averaged model is distilled toward that teacher on the public inputs
   (the one KD core), **early-stopped on the server's validation split**: the weights kept are
   those of the best validation epoch, the plain average included (epoch 0), so distillation
   can only be kept when it helps on validation.

A reply that is an error, names an unknown architecture, or whose weights do not fit its
group's model (names, shapes, non-finite values) is rejected with a logged reason; the round
goes on with the rest. With one shared architecture FedDF is FedAvg plus server-side
distillation.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from fedkd import protocol as P
from fedkd.config import FDConfig
from fedkd.models import build_model
from fedkd.training import TrainConfig, distill, evaluate, make_optimizer, predict_logits
from strategies.fed_distill import PublicSet, RoundCallback, RoundRecord, TestSet
from strategies.fedavg_baseline import CountingFedAvg, flower_kwargs, run_weight_sharing

log = logging.getLogger(__name__)


@dataclass
class GroupReply:
    """One accepted reply: the client's architecture, weights and example count."""

    node_id: int
    model_name: str
    state: dict[str, torch.Tensor]
    num_examples: float


@dataclass
class RoundDiagnostics:
    """What FedDF's round did beyond FedAvg's bytes (reported in the round's record)."""

    rejected: list[int] = field(default_factory=list)  # node ids
    reasons: dict[str, int] = field(default_factory=dict)
    teacher_accuracy: float | None = None  # the ensemble's argmax on the public set (oracle)


class FedDF(CountingFedAvg):
    """FedDF over architecture groups; the group of ``cfg.student_model`` is the reported model.

    Parameters
    ----------
    cfg : FDConfig
        Run configuration: sampling, local training, ``server_epochs``/``server_lr``/
        ``batch_size``/``optimizer`` for the distillation, ``temperature`` for KD.
    groups : dict[str, torch.nn.Module]
        One model per architecture (client architectures and the student's), initialised.
    public : PublicSet
        The public unlabeled inputs the ensemble is distilled on.
    val : TestSet, optional
        The server's labelled validation split: what early-stops each group's distillation.
        Without it (no validation data) every group keeps its last distillation epoch.
    num_classes : int
        Output size of every model.
    **kwargs
        Flower ``FedAvg``'s sampling settings (:func:`strategies.fedavg_baseline.flower_kwargs`).
    """

    def __init__(
        self,
        cfg: FDConfig,
        groups: dict[str, torch.nn.Module],
        public: PublicSet,
        val: TestSet | None,
        num_classes: int,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.cfg = cfg
        self.num_classes = num_classes
        self.groups = groups
        self.public = public
        self.val = val
        self.node_models: dict[int, str] = {}  # learned from each node's replies
        self.diagnostics: dict[int, RoundDiagnostics] = {}
        self.distill_cfg = TrainConfig(
            epochs=1,  # one epoch per call: validation picks among epochs
            batch_size=cfg.batch_size,
            lr=cfg.server_lr,
            optimizer=cfg.optimizer_name,
        )
        self.rng = np.random.default_rng(cfg.seed)

    @property
    def student(self) -> torch.nn.Module:
        return self.groups[self.cfg.student_model]

    def annotate(self, record: RoundRecord) -> None:
        """Add the round's rejections and the ensemble's public-set accuracy to its record."""
        diag = self.diagnostics.get(record.round)
        if diag is None:
            return
        record.rejected = len(diag.rejected)
        record.rejected_nodes = diag.rejected
        record.rejected_reasons = diag.reasons
        record.teacher_accuracy = diag.teacher_accuracy

    # ------------------------------------------------------------------ messages
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Each sampled node gets its group's weights (every group's while it is unknown)."""
        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        sample_size = max(num_nodes, self.min_train_nodes)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        config["server-round"] = server_round
        every_group = {
            P.group_arrays_key(m): ArrayRecord(g.state_dict()) for m, g in self.groups.items()
        }
        messages = []
        for node_id in node_ids:
            known = self.node_models.get(node_id)
            key = None if known is None else P.group_arrays_key(known)
            weights = every_group if key is None else {key: every_group[key]}
            content = RecordDict({**weights, P.CONFIG: config})
            messages.append(
                Message(content=content, message_type=MessageType.TRAIN, dst_node_id=node_id)
            )
        self.round_bytes[server_round] = [0, sum(P.wire_nbytes(m.content) for m in messages), 0]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average within groups, distil every group toward the ensemble, keep the best on val."""
        replies = list(replies)
        diag = RoundDiagnostics()
        self.diagnostics[server_round] = diag
        accepted = [r for r in (self.accept(reply, diag) for reply in replies) if r is not None]
        ok = [m for m in replies if not m.has_error()]
        self.round_bytes[server_round][0] = sum(P.wire_nbytes(m.content) for m in ok)
        self.round_bytes[server_round][2] = len(accepted)
        if not accepted:
            log.error("round %d: no valid FedDF reply; the models are unchanged", server_round)
            return None, None
        teacher = self.ensemble_logits(accepted)  # (public, classes)
        oracle = self.public.oracle_labels
        if oracle is not None:
            diag.teacher_accuracy = float((teacher.argmax(1) == oracle).float().mean())
        kept = {}
        for name, model in self.groups.items():
            members = [r for r in accepted if r.model_name == name]
            if members:
                model.load_state_dict(average_states(members))
            kept[name] = self.distil_group(model, teacher)
        log.info(
            "round %d: FedDF kept distillation epoch %s (0: the plain average)", server_round, kept
        )
        examples = float(sum(r.num_examples for r in accepted))
        return ArrayRecord(self.student.state_dict()), MetricRecord({"num-examples": examples})

    # ------------------------------------------------------------------ steps
    def accept(self, reply: Message, diag: RoundDiagnostics) -> GroupReply | None:
        """The reply decoded, or ``None`` (reason logged and counted) when it cannot be used."""
        node = int(reply.metadata.src_node_id)
        decoded = _decode(reply, self.groups)
        if isinstance(decoded, str):
            log.warning("FedDF: rejected the reply of node %d: %s", node, decoded)
            diag.rejected.append(node)
            key = decoded.split(":")[0]
            diag.reasons[key] = diag.reasons.get(key, 0) + 1
            return None
        self.node_models[node] = decoded.model_name
        return decoded

    def ensemble_logits(self, accepted: list[GroupReply]) -> torch.Tensor:
        """AVGLOGITS: the mean of every client model's logits on the public inputs."""
        scratch = {name: copy.deepcopy(model) for name, model in self.groups.items()}
        total = torch.zeros(self.public.size, self.num_classes)
        for reply in accepted:
            model = scratch[reply.model_name]
            model.load_state_dict(reply.state)
            total += predict_logits(model, self.public.inputs)
        return total / len(accepted)

    def distil_group(self, model: torch.nn.Module, teacher: torch.Tensor) -> int:
        """Distil ``model`` toward ``teacher`` for up to ``server_epochs`` epochs with a fresh
        optimizer; keep the best epoch on validation (0 = the plain average). Returns it."""
        optimizer = make_optimizer(model, self.distill_cfg)
        best_epoch, best_acc = 0, self.val_accuracy(model)
        best_state = copy.deepcopy(model.state_dict())
        for epoch in range(1, self.cfg.server_epochs + 1):
            distill(
                model,
                self.public.inputs,
                teacher,
                self.cfg.kd_spec(),
                self.distill_cfg,
                optimizer=optimizer,
                generator=torch.Generator().manual_seed(int(self.rng.integers(2**31))),
                teacher_is_probs=False,
                teacher_temperature=None,
            )
            acc = self.val_accuracy(model)
            if self.val is None or acc > best_acc:
                best_epoch, best_acc = epoch, acc
                best_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        return best_epoch

    def val_accuracy(self, model: torch.nn.Module) -> float:
        if self.val is None:
            return 0.0
        return evaluate(model, self.val.x, self.val.y, num_classes=self.val.num_classes).accuracy


def average_states(replies: list[GroupReply]) -> dict[str, torch.Tensor]:
    """Example-weighted mean of same-architecture state dicts (FedAvg within a group).

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are averaged in float and cast
    back, as Flower's ``aggregate_arrayrecords`` does through NumPy.
    """
    total = sum(r.num_examples for r in replies)
    out: dict[str, torch.Tensor] = {}
    for key, first in replies[0].state.items():
        acc = sum(r.state[key].double() * (r.num_examples / total) for r in replies)
        out[key] = acc.to(first.dtype)  # type: ignore[union-attr]
    return out


def _decode(reply: Message, groups: dict[str, torch.nn.Module]) -> GroupReply | str:
    """The reply as a :class:`GroupReply`, or why it cannot be averaged; the text before the
    first colon is the reason's category in the round's counts."""
    if reply.has_error():
        return f"error: {reply.error.reason}"
    content = reply.content
    if P.ARRAYS not in content.array_records or P.METRICS not in content.metric_records:
        return "malformed: missing weights or metrics"
    meta = content.config_records.get(P.META)
    name = None if meta is None else meta.get(P.MODEL_NAME)
    if name not in groups:
        return f"unknown-model: {name!r} is not one of {sorted(groups)}"
    examples = content.metric_records[P.METRICS].get(P.NUM_EXAMPLES)
    if not isinstance(examples, int | float) or not math.isfinite(examples) or examples <= 0:
        return f"malformed: {P.NUM_EXAMPLES} must be a finite number > 0, got {examples!r}"
    expected = groups[str(name)].state_dict()
    try:
        state = content.array_records[P.ARRAYS].to_torch_state_dict()
    except Exception as exc:  # undecodable arrays
        return f"malformed: {exc}"
    if set(state) != set(expected):
        return f"shape-mismatch: parameter names differ from {name}'s"
    for key, value in state.items():
        if value.shape != expected[key].shape:
            want = tuple(expected[key].shape)
            return f"shape-mismatch: {key} is {tuple(value.shape)}, expected {want}"
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"non-finite: {key}"
    return GroupReply(int(reply.metadata.src_node_id), str(name), state, float(examples))


def build_groups(
    cfg: FDConfig, input_shape: tuple[int, ...], num_classes: int
) -> dict[str, torch.nn.Module]:
    """One seeded model per architecture: every client architecture and the student's."""
    names = sorted({*cfg.client_model_names, cfg.student_model})
    torch.manual_seed(cfg.seed)
    return {name: build_model(name, input_shape, num_classes) for name in names}


def run_feddf(
    grid: Grid,
    cfg: FDConfig,
    groups: dict[str, torch.nn.Module],
    public: PublicSet,
    test: TestSet,
    callbacks: list[RoundCallback],
    *,
    val: TestSet | None = None,
) -> ArrayRecord:
    """Run FedDF for ``cfg.num_rounds`` rounds; the student group's model is evaluated."""
    strategy = FedDF(cfg, groups, public, val, test.num_classes, **flower_kwargs(cfg))
    evaluated = copy.deepcopy(strategy.student)
    return run_weight_sharing(strategy, grid, cfg, evaluated, test, callbacks, val=val)

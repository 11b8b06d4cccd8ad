"""Simulated faults and attackers, switched on by config (``fault-*``, ``byzantine-*`` keys).

Researchers need to see what a strategy does when clients crash, answer too late, or lie. The
decisions here are deterministic functions of (seed, partition id, round, phase), so a rerun
meets the same faults, and a client never needs to know about the others. With every
probability and fraction at 0 (the defaults, and what devices run) nothing here acts.

Byzantine attacks act on the soft labels a client uploads (after any DP noise: attackers do not
bother to add it):

``uniform``
    random distributions (Dirichlet(1) rows): noise with no signal.
``label_flip``
    class ``c``'s probability reported as class ``C-1-c``'s: confidently wrong, consistently.
``targeted``
    every row one-hot on ``byzantine-target``: pushes the teacher toward one class.
``peaked``
    every row one-hot on a random class: maximal confidence, no signal; confidence-weighted
    rules trust it most.
``scaled``
    the honest rows multiplied by 10: no longer distributions. Reply validation must reject it
    (the protocol carries probabilities, so scaling cannot pass unnoticed).

The distillation-specific attacks below need "the honest mean" ``Ȳ_H``. Roux, Zimmer & Pokutta
(ICLR 2025, "On the Byzantine-Resilience of Distillation-Based Federated Learning") give their
attackers the honest clients' predictions; a simulated attacker here sees only its own, so it
uses its own honest soft labels (its model trained like everybody's) as the estimate of
``Ȳ_H``. That is the weaker, non-omniscient attacker; under IID data the two nearly agree.

``lma``
    Loss Maximization Attack (Roux et al.): each row one-hot on the class the honest mean finds
    least likely.
``cpa``
    Class Prior Attack (Roux et al.): each row one-hot on the class least similar to the honest
    mean's top class, similarity ``S = cos(P[:, c], P[:, d])`` from the honest mean's
    co-probabilities over the queried rows (classes predicted together are similar).
``topk``
    FedTGD-style top-k attack (Li et al., ICDCS 2024): the ``k`` largest entries of each row are
    reversed in place (the top class gets the k-th largest value and vice versa), so every row
    keeps its values, confidence and entropy but argmax moves to a plausible wrong class.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np

from fedkd.config import FDConfig

Phase = Literal["train", "query"]
SCALE_FACTOR = 10.0
TOPK_ATTACK_K = 3  # entries reversed per row by the top-k attack
_SALT = {"train": 1, "query": 2, "straggle": 3}


class InjectedFault(RuntimeError):
    """A crash fedkd simulated on purpose (the reply becomes an error, as a real crash would)."""


def _rng(cfg: FDConfig, partition_id: int, server_round: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, partition_id, server_round, salt])


def attackers(cfg: FDConfig) -> frozenset[int]:
    """Partition ids of the simulated attackers: ``round(fraction × clients)``, seeded."""
    count = round(cfg.byzantine_fraction * cfg.num_clients)
    order = np.random.default_rng([cfg.seed, 0xB12]).permutation(cfg.num_clients)
    return frozenset(int(i) for i in order[:count])


def crash(cfg: FDConfig, partition_id: int, server_round: int, phase: Phase) -> None:
    """Maybe raise :class:`InjectedFault` at the start of ``phase`` (train, or the query)."""
    p = cfg.fault_crash_train if phase == "train" else cfg.fault_crash_query
    if p > 0 and _rng(cfg, partition_id, server_round, _SALT[phase]).random() < p:
        raise InjectedFault(
            f"injected crash: partition {partition_id}, round {server_round}, {phase}"
        )


def straggles(cfg: FDConfig, partition_id: int, server_round: int, message_type: str) -> bool:
    """Whether this client answers this message too late (train and query draw independently)."""
    salt = _SALT["straggle"] + len(message_type)
    p = cfg.fault_straggle
    return p > 0 and bool(_rng(cfg, partition_id, server_round, salt).random() < p)


def straggle(
    cfg: FDConfig, partition_id: int, server_round: int, message_type: str, sent: Any = None
) -> None:
    """If :func:`straggles`, wait until 1 s past the round timeout before handling the message.

    The wait counts from when the server created the message (``sent.created_at``, Flower
    message metadata) when known, so a straggler that sat in a simulation queue waits only as
    long as needed, and blocks its Ray worker no longer than that.
    """
    if straggles(cfg, partition_id, server_round, message_type):
        created = getattr(sent, "created_at", None)
        deadline = (created if created else time.time()) + cfg.round_timeout + 1.0
        time.sleep(max(0.0, deadline - time.time()))


def attack(
    probs: np.ndarray, kind: str, *, rng: np.random.Generator, target: int = 0
) -> np.ndarray:
    """What an attacker uploads instead of its honest ``(rows, classes)`` soft labels."""
    rows, classes = probs.shape
    if kind == "uniform":
        return rng.dirichlet(np.ones(classes), size=rows).astype(np.float32)
    if kind == "label_flip":
        return np.ascontiguousarray(probs[:, ::-1])
    if kind == "targeted":
        if not 0 <= target < classes:
            raise ValueError(f"byzantine-target {target} outside [0, {classes})")
        return _one_hot(np.full(rows, target), classes)
    if kind == "peaked":
        return _one_hot(np.asarray(rng.integers(classes, size=rows)), classes)
    if kind == "scaled":
        return (probs * SCALE_FACTOR).astype(np.float32)
    if kind == "lma":
        return _one_hot(np.argmin(probs, axis=1), classes)
    if kind == "cpa":
        return _one_hot(class_prior_targets(probs), classes)
    if kind == "topk":
        return topk_reversed(probs, min(TOPK_ATTACK_K, classes))
    raise ValueError(f"unknown attack {kind!r}")


def class_similarity(mean: np.ndarray) -> np.ndarray:
    """``(classes, classes)`` cosine similarity of the classes' probability columns.

    Two classes are similar when the (estimated honest) mean puts mass on both for the same
    inputs; a class the mean never predicts has similarity 0 to every other class.
    """
    cols = np.asarray(mean, dtype=np.float64)  # (rows, classes)
    gram = cols.T @ cols  # (classes, classes) co-probabilities
    norms = np.sqrt(np.clip(np.diag(gram), 1e-30, None))
    return gram / np.outer(norms, norms)


def class_prior_targets(mean: np.ndarray) -> np.ndarray:
    """CPA's class per row: the one least similar to the mean's top class (never the top one)."""
    similarity = class_similarity(mean)
    np.fill_diagonal(similarity, np.inf)
    return np.argmin(similarity[np.argmax(mean, axis=1)], axis=1)  # (rows,)


def topk_reversed(probs: np.ndarray, k: int) -> np.ndarray:
    """Each row with its ``k`` largest entries reversed in order (values kept, argmax moved)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (rows, k) largest first
    out = np.array(probs, dtype=np.float32, copy=True)
    np.put_along_axis(out, order, np.take_along_axis(probs, order[:, ::-1], axis=1), axis=1)
    return out


def maybe_attack(
    cfg: FDConfig, partition_id: int, server_round: int, probs: np.ndarray
) -> np.ndarray:
    """``probs`` unchanged for honest clients, the configured attack for attackers."""
    if cfg.byzantine_fraction <= 0 or partition_id not in attackers(cfg):  # 0: no permutation
        return probs
    rng = _rng(cfg, partition_id, server_round, 0xA77)
    return attack(probs, cfg.byzantine_attack, rng=rng, target=cfg.byzantine_target)


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((len(labels), classes), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out

"""Explaining FD's teacher from the replies the server already holds (pure NumPy).

Unlike FedAvg's server, a federated-distillation server sees every client's prediction on
every public sample, so it can say *why* the teacher says what it says:

* **provenance** (:func:`provenance`) — per public sample, which clients drove the teacher's
  label (each client's share of the probability mass on that label) and how much they agreed
  (fraction of clients whose own argmax is the teacher's label);
* **agreement and per-class reliability** (:func:`client_agreement`,
  :func:`class_reliability`, :class:`ReliabilityHistory`) — per client, how often its argmax
  matches the consensus, overall and per consensus class, accumulated over rounds;
* **contribution** (:func:`leave_one_out`, :func:`shapley_sampled`) — the effect of each
  client on the teacher under the *same* aggregation rule: the teacher re-aggregated without
  the client (leave-one-out), or the client's mean marginal effect over random join orders
  (Monte-Carlo Shapley values; Ghorbani & Zou 2019, "Data Shapley").

A Byzantine client shows up as low agreement, low reliability on every class, and a negative
leave-one-out effect (the teacher gets *better* without it); :func:`explain_round` bundles all
of it into one JSON-ready dict per round, and :func:`plot_explanation` draws it.

Conventions follow :mod:`strategies.aggregation`: ``probs`` is ``(clients, samples, classes)``,
teachers are ``(samples, classes)``. Utilities are measured against ``reference`` labels when
the caller has them (a simulator's oracle labels, for diagnostics), else against the full
teacher's own labels (what a real server can compute).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from strategies.aggregation import AggregationContext, aggregate

__all__ = [
    "Provenance",
    "ReliabilityHistory",
    "class_reliability",
    "client_agreement",
    "explain_round",
    "leave_one_out",
    "plot_explanation",
    "provenance",
    "shapley_sampled",
]


def _check(probs: np.ndarray, teacher: np.ndarray | None = None) -> None:
    if probs.ndim != 3 or 0 in probs.shape:
        raise ValueError(f"probs must be (clients, samples, classes), got shape {probs.shape}")
    if teacher is not None and teacher.shape != probs.shape[1:]:
        raise ValueError(f"teacher has shape {teacher.shape}, expected {probs.shape[1:]}")


# --------------------------------------------------------------------------- provenance


@dataclass(frozen=True, eq=False)
class Provenance:
    """Where each public sample's teacher label came from.

    Attributes
    ----------
    label : np.ndarray
        ``(samples,)`` the teacher's argmax.
    share : np.ndarray
        ``(clients, samples)`` each client's share of the total probability mass the clients
        put on ``label`` (columns sum to 1; uniform when nobody puts mass there).
    vote_agreement : np.ndarray
        ``(samples,)`` fraction of clients whose own argmax equals ``label``.
    driver : np.ndarray
        ``(samples,)`` index of the client with the largest share.
    """

    label: np.ndarray
    share: np.ndarray
    vote_agreement: np.ndarray
    driver: np.ndarray


def provenance(probs: np.ndarray, teacher: np.ndarray) -> Provenance:
    """Per public sample: who drove the teacher's label and how much the clients agreed."""
    _check(probs, teacher)
    label = teacher.argmax(axis=1)  # (samples,)
    samples = np.arange(probs.shape[1])
    mass = probs[:, samples, label].astype(np.float64)  # (clients, samples)
    total = mass.sum(axis=0, keepdims=True)
    share = np.where(total > 0, mass / np.where(total > 0, total, 1.0), 1.0 / probs.shape[0])
    votes = probs.argmax(axis=2)  # (clients, samples)
    return Provenance(
        label=label,
        share=share,
        vote_agreement=(votes == label).mean(axis=0),
        driver=share.argmax(axis=0),
    )


# --------------------------------------------------------------------------- agreement


def client_agreement(probs: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """``(clients,)`` fraction of public samples where a client's argmax is the teacher's."""
    _check(probs, teacher)
    return (probs.argmax(axis=2) == teacher.argmax(axis=1)).mean(axis=1)


def _class_hits(
    probs: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(hits, counts)``: ``(clients, classes)`` correct argmaxes and ``(classes,)`` samples."""
    votes = probs.argmax(axis=2)  # (clients, samples)
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.stack(
        [np.bincount(labels[v == labels], minlength=num_classes) for v in votes]
    )  # (clients, classes)
    return hits, counts


def class_reliability(
    probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """``(clients, classes)`` per-class reliability: on the samples whose reference label is
    ``c``, the fraction where the client's argmax is ``c``; NaN where no sample has label ``c``.

    ``labels`` is the consensus (``teacher.argmax(1)``) on a real server, or oracle labels in a
    simulator.
    """
    _check(probs)
    classes = probs.shape[2] if num_classes is None else num_classes
    hits, counts = _class_hits(probs, np.asarray(labels), classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True, eq=False)
class ReliabilityHistory:
    """Per-client, per-class reliability accumulated over rounds (pooled counts).

    Immutable: :meth:`update` returns a new history, so a round's record is never mutated
    after the fact. Clients are identified by id, so a client absent from a round (not
    sampled, crashed, dropped by validation) keeps its counts.
    """

    num_classes: int
    hits: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    counts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    rounds: int = 0

    def update(
        self, client_ids: Sequence[str], probs: np.ndarray, labels: np.ndarray
    ) -> ReliabilityHistory:
        """Add one round's replies ``(clients, samples, classes)`` judged against ``labels``."""
        _check(probs)
        if len(client_ids) != probs.shape[0]:
            raise ValueError(f"{len(client_ids)} client ids for {probs.shape[0]} replies")
        hits, counts = _class_hits(probs, np.asarray(labels), self.num_classes)
        new_hits, new_counts = dict(self.hits), dict(self.counts)
        zero = np.zeros(self.num_classes, dtype=np.int64)
        for cid, h in zip(client_ids, hits, strict=True):
            new_hits[cid] = new_hits.get(cid, zero) + h
            new_counts[cid] = new_counts.get(cid, zero) + counts
        return ReliabilityHistory(self.num_classes, new_hits, new_counts, self.rounds + 1)

    def reliability(self) -> dict[str, list[float]]:
        """Per client id, per class: pooled hits / pooled samples (NaN for unseen classes)."""
        out = {}
        for cid in sorted(self.hits):
            c = self.counts[cid]
            with np.errstate(invalid="ignore", divide="ignore"):
                out[cid] = np.where(c > 0, self.hits[cid] / np.maximum(c, 1), np.nan).tolist()
        return out


# --------------------------------------------------------------------------- contribution


def _subset_ctx(ctx: AggregationContext, keep: np.ndarray) -> AggregationContext:
    return dataclasses.replace(
        ctx,
        num_examples=np.asarray(ctx.num_examples)[keep],
        class_counts=np.asarray(ctx.class_counts)[keep],
    )


def _utility(teacher: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a teacher's argmax against reference labels."""
    return float((teacher.argmax(axis=1) == labels).mean())


def leave_one_out(
    probs: np.ndarray,
    ctx: AggregationContext,
    rule: str = "mean",
    *,
    reference: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Each client's leave-one-out effect on the teacher under aggregation ``rule``.

    Returns
    -------
    dict
        ``"accuracy_effect"`` ``(clients,)``: utility(all) − utility(all but i), utility being
        the teacher's accuracy on ``reference`` labels (default: the full teacher's labels,
        so the effect is then ≥ 0 and measures how many labels the client decides).
        Positive = the client helps; a harmful client has a negative effect.
        ``"label_flips"`` ``(clients,)``: fraction of samples whose teacher label changes
        without the client. ``"tv_shift"`` ``(clients,)``: mean total-variation distance
        between the teacher with and without the client.
    """
    _check(probs)
    n = probs.shape[0]
    if n < 2:
        raise ValueError("leave-one-out needs at least 2 clients")
    full = aggregate(rule, probs, ctx)
    labels = full.argmax(axis=1) if reference is None else np.asarray(reference)
    base = _utility(full, labels)
    effect, flips, tv = np.zeros(n), np.zeros(n), np.zeros(n)
    for i in range(n):
        keep = np.arange(n) != i
        without = aggregate(rule, probs[keep], _subset_ctx(ctx, keep))
        effect[i] = base - _utility(without, labels)
        flips[i] = float((without.argmax(axis=1) != full.argmax(axis=1)).mean())
        tv[i] = float(0.5 * np.abs(without - full).sum(axis=1).mean())
    return {"accuracy_effect": effect, "label_flips": flips, "tv_shift": tv}


def shapley_sampled(
    probs: np.ndarray,
    ctx: AggregationContext,
    rule: str = "mean",
    *,
    reference: np.ndarray | None = None,
    permutations: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """``(clients,)`` Monte-Carlo Shapley values of the clients for the teacher's accuracy.

    Each permutation adds the clients one at a time; a client's marginal contribution is the
    change of the teacher's accuracy (against ``reference``, default the full teacher's labels)
    when it joins. The empty coalition's teacher is uniform (accuracy 1/classes by
    convention). The values sum to utility(all) − 1/classes in every permutation, hence
    exactly on average (efficiency). Cost: ``permutations × clients`` aggregations.
    """
    _check(probs)
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    n, _, classes = probs.shape
    full = aggregate(rule, probs, ctx)
    labels = full.argmax(axis=1) if reference is None else np.asarray(reference)
    empty = 1.0 / classes
    rng = np.random.default_rng(seed)
    values = np.zeros(n)
    for _ in range(permutations):
        order = rng.permutation(n)
        previous = empty
        for k in range(1, n + 1):
            members = np.sort(order[:k])
            current = _utility(aggregate(rule, probs[members], _subset_ctx(ctx, members)), labels)
            values[order[k - 1]] += current - previous
            previous = current
    return values / permutations


# --------------------------------------------------------------------------- report


def explain_round(
    probs: np.ndarray,
    ctx: AggregationContext,
    rule: str,
    client_ids: Sequence[str],
    *,
    reference: np.ndarray | None = None,
    shapley_permutations: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """One round's explanation as a JSON-ready dict (lists, floats; NaN for unseen classes).

    ``reference`` labels (a simulator's oracle) add the teacher's accuracy and make the
    contributions signed against the truth; without them everything is judged against the
    consensus, as a real server must.
    """
    _check(probs)
    if len(client_ids) != probs.shape[0]:
        raise ValueError(f"{len(client_ids)} client ids for {probs.shape[0]} replies")
    teacher = aggregate(rule, probs, ctx)
    prov = provenance(probs, teacher)
    labels = teacher.argmax(axis=1) if reference is None else np.asarray(reference)
    loo = leave_one_out(probs, ctx, rule, reference=reference)
    report: dict[str, Any] = {
        "rule": rule,
        "clients": list(client_ids),
        "judged_against": "consensus" if reference is None else "reference",
        "teacher_accuracy": None if reference is None else _utility(teacher, labels),
        "agreement": client_agreement(probs, teacher).tolist(),
        "class_reliability": class_reliability(probs, labels).tolist(),
        "loo_accuracy_effect": loo["accuracy_effect"].tolist(),
        "loo_label_flips": loo["label_flips"].tolist(),
        "loo_tv_shift": loo["tv_shift"].tolist(),
        "samples": {
            "label": prov.label.tolist(),
            "vote_agreement": prov.vote_agreement.tolist(),
            "driver": [client_ids[i] for i in prov.driver],
            "driver_share": prov.share.max(axis=0).tolist(),
        },
        "mean_vote_agreement": float(prov.vote_agreement.mean()),
    }
    if shapley_permutations:
        report["shapley"] = shapley_sampled(
            probs, ctx, rule, reference=reference, permutations=shapley_permutations, seed=seed
        ).tolist()
    return report


def plot_explanation(report: dict[str, Any], path: str | Path) -> Path:
    """Agreement, leave-one-out effect and the per-class reliability heatmap of one round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients = report["clients"]
    rel = np.asarray(report["class_reliability"], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.35 * len(clients) + 2.5))
    y = np.arange(len(clients))
    axes[0].barh(y, report["agreement"], color="tab:blue")
    axes[0].set(title="agreement with consensus", xlim=(0, 1), yticks=y, yticklabels=clients)
    effect = np.asarray(report["loo_accuracy_effect"])
    axes[1].barh(y, effect, color=np.where(effect < 0, "tab:red", "tab:green"))
    axes[1].axvline(0, color="black", lw=0.8)
    axes[1].set(title=f"leave-one-out effect ({report['judged_against']})", yticks=y)
    axes[1].set_yticklabels([])
    image = axes[2].imshow(rel, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axes[2].set(title="per-class reliability", xlabel="class", yticks=y)
    axes[2].set_yticklabels([])
    fig.colorbar(image, ax=axes[2])
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

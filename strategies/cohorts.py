"""Cohorts: several virtual clients per Flower node and message (``clients-per-message`` = K).

A simulated FD round at scale is bounded by the runtime's cost per message (Ray: ~19 ms of CPU
per message against ~4.6 ms of work for a tiny client; docs/benchmarks.md §2b), not by the
clients' work. With K > 1 the federation has ``num-clients / K`` nodes and node ``n`` stands
for the K virtual clients ``n·K + s`` (slots ``s < K``; with K = 1 a client's id *is* its node
id). The server samples *virtual clients*, exactly as it samples nodes with K = 1, sends each
node one message naming the slots sampled from it, and splits the reply back into one reply
per virtual client (:func:`expand`) before anything reads it: validation, rejections,
aggregation, byte counts, privacy accounting and per-client metrics all see the same replies,
one per virtual client, as with K = 1. The record layout is in :mod:`fedkd.protocol`.

What differs from K = 1 is timing: a cohort's members answer together, so a straggler (or a
whole-node failure) delays (or fails) every member sampled from that node in that round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import Error, Message, RecordDict

from fedkd import protocol as P

log = logging.getLogger(__name__)
MISSING_MEMBER = "cohort reply has no part for this client"


def virtual_clients(nodes: Iterable[int], k: int) -> list[int]:
    """The virtual client ids of ``nodes`` in node order, slot order within a node."""
    return [int(n) * k + s for n in nodes for s in range(k)]


def by_node(clients: Iterable[int], k: int) -> dict[int, list[int]]:
    """Sampled virtual clients grouped as ``{node: [slots]}`` (first-seen node order)."""
    groups: dict[int, list[int]] = {}
    for client in clients:
        node, slot = divmod(int(client), k)
        groups.setdefault(node, []).append(slot)
    return groups


def requests(content: RecordDict, message_type: str, groups: dict[int, list[int]]) -> list[Message]:
    """One request per node: the round's shared records plus the node's slots."""
    return [
        Message(content=P.cohort_request(content, slots), message_type=message_type, dst_node_id=n)
        for n, slots in groups.items()
    ]


def expand(
    replies: Iterable[Message], k: int, groups: dict[int, list[int]] | None
) -> list[Message]:
    """Each node's reply as one reply per virtual client it was asked for.

    A member's part becomes a plain reply whose sender is the virtual client; a member's
    error part, an error reply of the whole node, or a slot missing from the reply becomes an
    error reply for that client (validation then rejects it alone). Parts for slots that were
    not asked for are dropped with a warning. ``groups`` (what was sent) says which slots each
    node owes; ``None`` takes the slots the reply itself holds (Flower-API form, where the
    strategy does not see what was sent).
    """
    out: list[Message] = []
    for reply in replies:
        node = int(reply.metadata.src_node_id)
        parts = {} if reply.has_error() else P.split_cohort_reply(reply.content)
        asked = groups.get(node, []) if groups is not None else sorted(parts)
        for slot in asked:
            client = node * k + slot
            if reply.has_error():
                out.append(_reply(client, reply, Error(reply.error.code, reply.error.reason)))
                continue
            part = parts.get(slot)
            if part is None:
                out.append(_reply(client, reply, Error(0, MISSING_MEMBER)))
            elif isinstance(part, tuple):
                out.append(_reply(client, reply, Error(part[0], part[1])))
            else:
                out.append(_reply(client, reply, part))
        extra = sorted(set(parts) - set(asked))
        if extra:
            log.warning("dropped parts for slots %s that node %d was not asked for", extra, node)
    return out


def _reply(client: int, reply: Message, body: RecordDict | Error) -> Message:
    """A reply from virtual client ``client`` (public Message API: a request to it, answered)."""
    request = Message(RecordDict(), dst_node_id=client, message_type=reply.metadata.message_type)
    if isinstance(body, Error):
        return Message(body, reply_to=request)
    return Message(body, reply_to=request)

"""The one place fedkd changes Flower's behaviour: the simulation's message poller.

Flower 1.41's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) moves
messages from the link state to its workers in ``add_messages_to_queue``: every 0.1 s it calls
``state.get_message_ins(node_id, limit=1)`` for *every* registered node, and the in-memory
link state answers each call by scanning *every* stored message (and re-checking its expiry).
One pass costs nodes × stored messages: measured at 2.65 µs per pair, 2.7 s per pass at 1,000
nodes × 1,000 messages, which saturates the driver while Ray's workers idle; at a 100,000-node
population with 100 sampled clients it is 10 M pairs (~26 s) per pass, so the run never ends.
There is no supported knob (the 0.1 s, the per-node loop and the scan are all fixed), so
:func:`indexed_poller` replaces that one function for the duration of one simulation:

* one pass over the stored messages per tick (O(messages), not O(nodes × messages));
* the same semantics otherwise: at most one undelivered message per node per tick, in store
  order, expired / cross-federation messages dropped by the state's own
  ``_check_stored_messages``, ``delivered_at`` stamped as ``get_message_ins`` stamps it.

It uses three attributes of ``InMemoryLinkState`` (``lock``, ``message_ins_store``,
``_check_stored_messages``); :func:`flower_has_expected_shape` checks them and the poller's
signature, a test asserts it, and :func:`patched_poller` falls back to Flower's own poller
(with a warning) when the shape differs. Upstream: the fix belongs in Flower as an index of
undelivered messages by destination node in ``InMemoryLinkState`` (or a ``get_message_ins``
over many nodes); when Flower has one, delete this module.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Queue
from typing import Any

log = logging.getLogger(__name__)
TESTED_FLWR = ("1.41",)  # minor versions this adapter was checked against
POLL_SECONDS = 0.1  # Flower's interval, unchanged
_ORIGINAL: dict[str, Any] = {}  # Flower's poller while patched


def _vce_api() -> Any:
    from flwr.server.superlink.fleet.vce import vce_api

    return vce_api


def flower_has_expected_shape() -> str | None:
    """``None`` when Flower looks as this adapter expects, else what differs (one line)."""
    import flwr
    from flwr.server.superlink.linkstate import InMemoryLinkState

    version = ".".join(flwr.__version__.split(".")[:2])
    if version not in TESTED_FLWR:
        return f"flwr {flwr.__version__} (adapter checked against {', '.join(TESTED_FLWR)})"
    original = getattr(_vce_api(), "add_messages_to_queue", None)
    if original is None:
        return "vce_api.add_messages_to_queue is gone"
    params = list(inspect.signature(original).parameters)
    if params != ["state", "queue", "nodes_mapping", "f_stop"]:
        return f"vce_api.add_messages_to_queue takes {params}"
    if not callable(getattr(InMemoryLinkState, "_check_stored_messages", None)):
        return "InMemoryLinkState._check_stored_messages is gone"
    return None


def pending_once(state: Any, nodes: set[int] | dict[int, int]) -> list[Any]:
    """Take at most one undelivered message per node in ``nodes``, in store order.

    What one tick of Flower's poller returns (``get_message_ins(node, limit=1)`` for each
    node), in one pass over the store instead of one pass per node.
    """
    from flwr.supercore.date import now

    with state.lock:
        wanted = [
            msg_id
            for msg_id, msg in list(state.message_ins_store.items())
            if msg.metadata.delivered_at == "" and msg.metadata.dst_node_id in nodes
        ]
        if not wanted:
            return []
        state._check_stored_messages(set(wanted))  # drops expired / invalid ones
        taken: dict[int, Any] = {}
        for msg_id in wanted:
            msg = state.message_ins_store.get(msg_id)
            if msg is not None and msg.metadata.dst_node_id not in taken:
                taken[msg.metadata.dst_node_id] = msg
        delivered_at = now().isoformat()
        for msg in taken.values():
            msg.metadata.delivered_at = delivered_at
    return list(taken.values())


def indexed_poller(
    state: Any, queue: Queue[Any], nodes_mapping: dict[int, int], f_stop: threading.Event
) -> None:
    """Drop-in for ``vce_api.add_messages_to_queue`` (same arguments, same semantics)."""
    from flwr.server.superlink.linkstate import InMemoryLinkState

    if not isinstance(state, InMemoryLinkState):  # another state kind: Flower's own loop
        _ORIGINAL["poller"](state, queue, nodes_mapping, f_stop)
        return
    while not f_stop.is_set():
        for msg in pending_once(state, nodes_mapping):
            queue.put(msg)
        f_stop.wait(POLL_SECONDS)


@contextmanager
def patched_poller() -> Iterator[bool]:
    """Use :func:`indexed_poller` inside the block; yields whether it is in use.

    Restored on exit. If Flower's shape differs from what this adapter knows, Flower's own
    poller stays (correct, only slower) and one warning says why.
    """
    problem = flower_has_expected_shape()
    if problem is not None:
        log.warning("keeping Flower's simulation poller (O(nodes x messages)): %s", problem)
        yield False
        return
    api = _vce_api()
    original = _ORIGINAL["poller"] = api.add_messages_to_queue
    api.add_messages_to_queue = indexed_poller
    try:
        yield True
    finally:
        api.add_messages_to_queue = original
        _ORIGINAL.pop("poller", None)

"""The indexed simulation poller: Flower's shape as the adapter expects it, same semantics."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from simulations import flower_poller


def test_flower_still_has_the_shape_the_adapter_patches() -> None:
    # Fails when a Flower upgrade moves the poller or the link state's internals: then check
    # whether Flower fixed the O(nodes x messages) scan upstream and delete the adapter.
    assert flower_poller.flower_has_expected_shape() is None
    from flwr.server.superlink.fleet.vce import vce_api

    original = vce_api.add_messages_to_queue
    with flower_poller.patched_poller() as used:
        assert used and vce_api.add_messages_to_queue is flower_poller.indexed_poller
    assert vce_api.add_messages_to_queue is original


class _State:
    """What pending_once reads of InMemoryLinkState: lock, store, validity check."""

    def __init__(self, messages: list[tuple[str, int]]) -> None:
        self.lock = threading.RLock()
        self.message_ins_store = {
            mid: SimpleNamespace(id=mid, metadata=SimpleNamespace(dst_node_id=n, delivered_at=""))
            for mid, n in messages
        }
        self.checked: list[set[str]] = []

    def _check_stored_messages(self, ids: set[str]) -> None:
        self.checked.append(ids)
        self.message_ins_store.pop("expired", None)  # as Flower drops an expired message


def test_one_message_per_node_per_tick_in_store_order() -> None:
    state = _State([("expired", 1), ("a", 1), ("b", 2), ("c", 1), ("d", 9), ("e", 2)])
    nodes = {1: 0, 2: 1}  # node 9 is not ours
    first: list[Any] = flower_poller.pending_once(state, nodes)
    assert [m.id for m in first] == ["a", "b"]
    assert all(m.metadata.delivered_at for m in first)
    assert [m.id for m in flower_poller.pending_once(state, nodes)] == ["c", "e"]
    assert flower_poller.pending_once(state, nodes) == []
    assert state.message_ins_store["d"].metadata.delivered_at == ""

"""The simulation's message movement: Flower's shape as the adapter expects it, the indexed
poller's semantics, and the wake-ups that replace Flower's two fixed sleeps."""

from __future__ import annotations

import logging
import threading
import time
from queue import Queue
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("ray")  # the adapter subclasses Flower's Ray actor pool (the `sim` extra)

from fedkd import client_app
from simulations import flower_poller
from strategies import receive


def test_flower_still_has_the_shape_the_adapter_patches() -> None:
    # Fails when a Flower upgrade moves the poller or the link state's internals: then check
    # whether Flower fixed the O(nodes x messages) scan upstream and delete the adapter.
    assert flower_poller.flower_has_expected_shape() is None
    from flwr.server.superlink.fleet.vce import vce_api

    _, run_simulation, raybackend = flower_poller._modules()

    def current() -> tuple[Any, ...]:
        return (
            vce_api.add_messages_to_queue,
            vce_api.put_message_into_state,
            run_simulation.InMemoryGrid,
            raybackend.BasicActorPool,
            vce_api.DeprecatedRunInfoStore,
        )

    original = current()
    with flower_poller.patched_poller() as used:
        assert used
        assert current() == (
            flower_poller.indexed_poller,
            flower_poller.signalling_injector,
            flower_poller.PromptGrid,
            flower_poller.StickyActorPool,
            flower_poller.OrderedContexts,
        )
    assert current() == original


def _context_after(trained: int) -> Any:
    from flwr.app import ConfigRecord, Context, RecordDict

    state = RecordDict({client_app.SAVES_KEY: ConfigRecord({"n": trained})} if trained else {})
    return Context(run_id=1, node_id=7, node_config={}, state=state, run_config={})


def test_a_late_replys_older_context_does_not_replace_the_nodes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = flower_poller.OrderedContexts(node_id=7, node_config={})
    store.register_context(run_id=1)
    assert client_app.saves(store.retrieve_context(1)) == 0
    store.update_context(1, _context_after(2))  # two train messages on another worker
    with caplog.at_level(logging.WARNING, logger=flower_poller.__name__):
        store.update_context(1, _context_after(1))  # a straggler's, read before both
    assert client_app.saves(store.retrieve_context(1)) == 2
    assert "dropped a late reply's Context (1 train messages) older than the node's (2)" in (
        caplog.text
    )
    late = _context_after(2)  # as new (a query, or a train read from the same Context): stored
    store.update_context(1, late)
    assert store.retrieve_context(1) is late


class _CountingLock:
    """A lock that counts how often it was taken (one per poller pass)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.taken = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.taken += 1

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class _State:
    """What pending_once reads of InMemoryLinkState: lock, store, validity check."""

    def __init__(self, messages: list[tuple[str, int]]) -> None:
        self.lock = _CountingLock()
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


def _wait_for(condition: Any, seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.001)
    return True


class _Factory:
    """What PromptGrid reads of a LinkStateFactory: ``state()``."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def state(self) -> Any:
        return self._state


class _GridState(_State):
    """_State plus what InMemoryGrid's push and pull call; a pull advances ``clock``."""

    def __init__(self, clock: list[float], pull_cost: float = 0.0) -> None:
        super().__init__([])
        self.clock, self.pull_cost = clock, pull_cost
        self.pulls: list[set[str]] = []
        self.replies: list[Any] = []

    def store_message_ins(self, msg: Any) -> str:
        self.message_ins_store[msg.metadata.message_id] = msg
        return str(msg.metadata.message_id)

    def store_message_res(self, msg: Any) -> str:
        self.replies.append(msg)
        return "reply"

    def get_message_res(self, message_ids: set[str], run_id: int) -> list[Any]:
        self.pulls.append(set(message_ids))
        self.clock[0] += self.pull_cost
        found, self.replies = self.replies, []
        return found

    def delete_messages(self, message_ins_ids: set[str]) -> None:
        pass


class _Metadata(SimpleNamespace):
    """A message's metadata as InMemoryGrid.push_messages fills and checks it."""

    @property
    def message_id(self) -> str:
        return str(self.__dict__.get("_message_id", ""))


def _message(dst: int) -> Any:
    meta = _Metadata(dst_node_id=dst, reply_to_message_id="", ttl=60.0, delivered_at="")
    return SimpleNamespace(metadata=meta)


def _reply(to: str) -> Any:
    return SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=to))


def _grid(
    monkeypatch: pytest.MonkeyPatch, pull_cost: float = 0.0
) -> tuple[flower_poller.PromptGrid, _GridState, list[float]]:
    clock = [100.0]
    monkeypatch.setattr(flower_poller, "_clock", lambda: clock[0])
    state = _GridState(clock, pull_cost)
    grid = flower_poller.PromptGrid(_Factory(state))
    grid._run = SimpleNamespace(run_id=1)  # what set_run stores; pull reads its run_id
    return grid, state, clock


def test_a_pushed_message_reaches_the_queue_without_waiting_for_the_next_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Flower's poller would take it at its next tick; with an hour between ticks only the
    # push's wake-up can deliver it within the test's 10 s.
    monkeypatch.setattr(flower_poller, "POLL_SECONDS", 3600.0)
    grid, state, _ = _grid(monkeypatch)
    queue: Queue[Any] = Queue()
    stop = threading.Event()
    poller = threading.Thread(
        target=flower_poller.poll_loop, args=(state, queue, {7: 0}, stop), daemon=True
    )
    poller.start()
    try:
        assert _wait_for(lambda: state.lock.taken >= 1)  # its first pass found nothing
        (msg_id,) = grid.push_messages([_message(7)])
        delivered = queue.get(timeout=10)
        assert delivered.metadata.message_id == msg_id
        assert delivered.metadata.delivered_at != ""
    finally:
        stop.set()
        # raised until the poller sees the stop: one raise could be cleared by a pass
        # already past its stop check, which would then sleep the patched hour
        for _ in range(100):
            flower_poller.wakeups(state).messages.set()
            poller.join(timeout=0.1)
            if not poller.is_alive():
                break
    assert not poller.is_alive()


def test_the_injector_stores_each_reply_and_raises_the_grids_flag() -> None:
    state = _GridState([0.0])
    queue: Queue[Any] = Queue()
    stop = threading.Event()
    injector = threading.Thread(target=flower_poller.signalling_injector, args=(state, queue, stop))
    injector.start()
    flag = flower_poller.wakeups(state).replies
    try:
        assert not flag.is_set()
        queue.put("reply-1")
        assert flag.wait(timeout=10)
        assert state.replies == ["reply-1"]
    finally:
        stop.set()
        injector.join(timeout=10)
    assert not injector.is_alive()


def test_prompt_grid_pulls_when_a_reply_is_stored_and_at_least_every_flower_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grid, state, clock = _grid(monkeypatch)
    assert grid.pull_interval == flower_poller.PROMPT_PULL_SECONDS
    assert receive.mode(grid) == "poll"  # replies still stream to the strategy per pull
    flag = flower_poller.wakeups(state).replies
    assert list(grid.pull_messages({"a"})) == [] and len(state.pulls) == 1  # first: real
    clock[0] += 0.01
    assert list(grid.pull_messages({"a"})) == [] and len(state.pulls) == 1  # nothing stored
    reply = _reply("a")
    state.replies, clock[0] = [reply], clock[0] + 0.01
    flag.set()
    assert list(grid.pull_messages({"a"})) == [reply] and len(state.pulls) == 2
    assert not flag.is_set()
    clock[0] += flower_poller.FLOWER_PULL_SECONDS - 0.001
    grid.pull_messages({"b"})
    assert len(state.pulls) == 2  # still inside Flower's interval, nothing stored
    clock[0] += 0.001
    grid.pull_messages({"b"})
    assert state.pulls[-1] == {"b"}  # Flower's interval passed: a real pull (expiry checks)


def test_prompt_grid_spaces_costly_pulls_by_their_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    cost = 0.002  # a pull over many outstanding messages
    grid, state, clock = _grid(monkeypatch, pull_cost=cost)
    flag = flower_poller.wakeups(state).replies
    grid.pull_messages({"a"})
    started = clock[0] - cost
    flag.set()
    earliest = started + cost / flower_poller.PULL_TIME_SHARE
    clock[0] = earliest - 0.001
    grid.pull_messages({"a"})
    assert len(state.pulls) == 1 and flag.is_set()  # waits for more replies to gather
    clock[0] = earliest
    grid.pull_messages({"a"})
    assert len(state.pulls) == 2 and not flag.is_set()


def test_a_pull_slower_than_flowers_interval_still_waits_that_interval_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Counted from the pull's start, a 0.15 s pull would make every 5 ms call a real pull:
    # the server thread would hold the link state's lock almost all the time.
    cost = 0.15
    grid, state, clock = _grid(monkeypatch, pull_cost=cost)
    grid.pull_messages({"a"})
    ended = clock[0]
    clock[0] = ended + flower_poller.PROMPT_PULL_SECONDS
    grid.pull_messages({"a"})
    assert len(state.pulls) == 1  # nothing stored, and Flower's interval not over
    clock[0] = ended + flower_poller.FLOWER_PULL_SECONDS + 1e-9
    grid.pull_messages({"a"})
    assert len(state.pulls) == 2


def _sticky_pool(monkeypatch: pytest.MonkeyPatch, actors: list[str]) -> Any:
    from flwr.simulation.ray_transport import ray_actor

    monkeypatch.setattr(ray_actor, "pool_size_from_resources", lambda _resources: len(actors))
    pool = flower_poller.StickyActorPool(actor_type=object, client_resources={}, actor_kwargs={})
    pool.pool = list(actors)  # idle actors (Flower's add_actors_to_pool would start Ray ones)
    return pool


def _served_by(pool: Any, node: str) -> tuple[str, object]:
    """Submit a job for ``node``; (the actor it went to, its future)."""
    future = object()
    served = []

    def actor_fn(actor: str, *_job: object) -> object:
        served.append(actor)
        return future

    assert pool.submit(actor_fn, (None, None, node, None)) is future
    return served[0], future


def test_sticky_pool_gives_a_node_the_actor_that_served_it_when_that_one_is_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = _sticky_pool(monkeypatch, ["x", "y"])
    first_a, fa = _served_by(pool, "a")
    first_b, fb = _served_by(pool, "b")
    assert {first_a, first_b} == {"x", "y"} and pool.pool == []
    pool.add_actor_back_to_pool(fa)  # a's actor returns first: Flower would pop b's last
    pool.add_actor_back_to_pool(fb)
    assert pool.pool == [first_a, first_b]
    again_a, fa = _served_by(pool, "a")
    again_b, fb = _served_by(pool, "b")
    assert (again_a, again_b) == (first_a, first_b)
    pool.add_actor_back_to_pool(fb)  # a's actor still busy: b's is the only one idle
    moved, f3 = _served_by(pool, "a")
    assert moved == first_b and pool.pool == []  # a takes what is idle, as Flower would
    pool.add_actor_back_to_pool(f3)
    pool.add_actor_back_to_pool(fa)  # Flower would now pop first_a
    assert _served_by(pool, "a")[0] == first_b  # the actor that served a last

"""The one place fedkd changes Flower's behaviour: how the simulation moves messages (and keeps
nodes' Contexts in order).

Flower 1.41's simulation engine (``flwr.server.superlink.fleet.vce.vce_api``) moves
messages from the link state to its workers in ``add_messages_to_queue``: every 0.1 s it calls
``state.get_message_ins(node_id, limit=1)`` for *every* registered node, and the in-memory
link state answers each call by scanning *every* stored message (and re-checking its expiry).
One pass costs nodes × stored messages: measured at 2.65 µs per pair, 2.7 s per pass at 1,000
nodes × 1,000 messages, which saturates the driver while Ray's workers idle; at a 100,000-node
population with 100 sampled clients it is 10 M pairs (~26 s) per pass, so the run never ends.

Both ends also *sleep* rather than wait: the poller 0.1 s between passes, and the ServerApp's
``InMemoryGrid`` 0.1 s between pulls (``pull_interval``). A message exchange therefore idles
up to 0.2 s whatever the clients' work, which at 100 tiny clients in two cohort messages was
a large part of a round's wall time (docs/benchmarks.md §2b, *Wake-ups instead of Flower's
sleeps*).

There is no supported knob for either (the 0.1 s, the per-node loop and the scan are all
fixed inside ``run_simulation``), so :func:`patched_poller` swaps five things for the
duration of one simulation:

* :func:`indexed_poller` for ``add_messages_to_queue``: one pass over the stored messages per
  tick (O(messages), not O(nodes × messages)), and the tick starts as soon as the grid stores
  a message instead of at the next 0.1 s;
* :func:`signalling_injector` for ``put_message_into_state``: the same loop, and it flags each
  stored reply for the grid;
* :class:`PromptGrid` for the ``InMemoryGrid`` that ``run_simulation`` builds: a pull
  happens as soon as a reply has been stored (checked every :data:`PROMPT_PULL_SECONDS`, a flag
  test, not a pull) and in any case every 0.1 s as before, so expiry and node-availability
  errors surface on Flower's schedule;
* :class:`StickyActorPool` for the Ray backend's ``BasicActorPool``: a node's message goes to
  the actor that served that node last when that actor is idle (Flower's pool hands it to
  whichever idle actor is last in its list, so a cohort changed worker from round to round
  and the new worker rebuilt or reloaded its clients); otherwise to any idle actor, as before;
* :class:`OrderedContexts` for ``vce_api``'s ``DeprecatedRunInfoStore`` (Flower's per-node
  Context store): a straggler's reply that completes after the node trained again elsewhere
  no longer brings back the node's older Context.

Same semantics otherwise: at most one undelivered message per node per tick, in store order,
expired / cross-federation messages dropped by the state's own ``_check_stored_messages``,
``delivered_at`` stamped as ``get_message_ins`` stamps it; replies stored and pulled by
Flower's own ``store_message_res`` / ``pull_messages``.

It uses Flower internals (three attributes of ``InMemoryLinkState``: ``lock``,
``message_ins_store``, ``_check_stored_messages``; the two ``vce_api`` functions' and
``InMemoryGrid``'s signatures; ``run_simulation``'s module-level ``InMemoryGrid``; the Ray
backend's module-level ``BasicActorPool``, its ``submit`` and ``add_actor_back_to_pool`` and
its ``pool`` list of idle actors; ``vce_api``'s module-level ``DeprecatedRunInfoStore``, its
``update_context`` and ``run_infos``):
:func:`flower_has_expected_shape` checks them, a test asserts it, and :func:`patched_poller`
keeps Flower's own (correct, only slower) machinery with a warning when the shape differs.
Upstream: the fixes belong in Flower as an index of undelivered messages by destination node
in ``InMemoryLinkState`` (or a ``get_message_ins`` over many nodes), a condition variable
instead of the two sleeps, node affinity in the actor pool, and a Context update that
refuses a reply older than the node's last; when Flower has them, delete this module.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from queue import Empty, Queue
from typing import Any

from flwr.app import Context
from flwr.compat.client.run_info_store import DeprecatedRunInfoStore
from flwr.simulation.ray_transport.ray_actor import BasicActorPool
from flwr.superlink.grid import InMemoryGrid

from fedkd.client_app import saves

log = logging.getLogger(__name__)
TESTED_FLWR = ("1.41",)  # minor versions this adapter was checked against
POLL_SECONDS = 0.1  # Flower's poller interval: now the longest a stored message waits
FLOWER_PULL_SECONDS = 0.1  # InMemoryGrid's default pull_interval: the longest between real pulls
PROMPT_PULL_SECONDS = 0.005  # how often PromptGrid checks whether a reply has been stored
PULL_TIME_SHARE = 0.05  # at most this share of PromptGrid's waiting goes into real pulls
_ORIGINAL: dict[str, Any] = {}  # Flower's functions while patched
_clock = time.monotonic  # PromptGrid's clock (tests drive it by hand)


@dataclass
class Wakeups:
    """Flags one link state's writers raise for its readers (instead of their fixed sleeps)."""

    messages: threading.Event = field(default_factory=threading.Event)  # grid stored a message
    replies: threading.Event = field(default_factory=threading.Event)  # a reply was stored


_WAKEUPS: weakref.WeakKeyDictionary[Any, Wakeups] = weakref.WeakKeyDictionary()
_WAKEUPS_LOCK = threading.Lock()


def wakeups(state: Any) -> Wakeups:
    """The :class:`Wakeups` of ``state`` (one per link state, created on first use)."""
    with _WAKEUPS_LOCK:
        found = _WAKEUPS.get(state)
        if found is None:
            found = _WAKEUPS[state] = Wakeups()
        return found


def _modules() -> tuple[Any, Any, Any]:
    """Flower's simulation engine module, its ``run_simulation`` module and its Ray backend."""
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.fleet.vce.backend import raybackend

    # the module, not the function of the same name that flwr.simulation re-exports
    return vce_api, importlib.import_module("flwr.simulation.run_simulation"), raybackend


def _params(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def flower_has_expected_shape() -> str | None:
    """``None`` when Flower looks as this adapter expects, else what differs (one line)."""
    import flwr
    from flwr.server.superlink.linkstate import InMemoryLinkState

    version = ".".join(flwr.__version__.split(".")[:2])
    if version not in TESTED_FLWR:
        return f"flwr {flwr.__version__} (adapter checked against {', '.join(TESTED_FLWR)})"
    vce_api, run_simulation, raybackend = _modules()
    expected = {
        "add_messages_to_queue": ["state", "queue", "nodes_mapping", "f_stop"],
        "put_message_into_state": ["state", "queue", "f_stop"],
    }
    for name, params in expected.items():
        function = getattr(vce_api, name, None)
        if function is None:
            return f"vce_api.{name} is gone"
        if _params(function) != params:
            return f"vce_api.{name} takes {_params(function)}"
    if getattr(run_simulation, "InMemoryGrid", None) is not InMemoryGrid:
        return "run_simulation no longer builds flwr.superlink.grid.InMemoryGrid"
    if _params(InMemoryGrid.__init__) != ["self", "state_factory", "pull_interval"]:
        return f"InMemoryGrid.__init__ takes {_params(InMemoryGrid.__init__)}"
    for name in ("_check_stored_messages", "store_message_res"):
        if not callable(getattr(InMemoryLinkState, name, None)):
            return f"InMemoryLinkState.{name} is gone"
    if getattr(raybackend, "BasicActorPool", None) is not BasicActorPool:
        return "the Ray backend no longer builds ray_actor.BasicActorPool"
    if _params(BasicActorPool.submit) != ["self", "actor_fn", "job"]:
        return f"BasicActorPool.submit takes {_params(BasicActorPool.submit)}"
    if _params(BasicActorPool.add_actor_back_to_pool) != ["self", "future"]:
        return "BasicActorPool.add_actor_back_to_pool changed"
    if getattr(vce_api, "DeprecatedRunInfoStore", None) is not DeprecatedRunInfoStore:
        return "vce_api no longer keeps contexts in DeprecatedRunInfoStore"
    if _params(DeprecatedRunInfoStore.update_context) != ["self", "run_id", "context"]:
        return f"update_context takes {_params(DeprecatedRunInfoStore.update_context)}"
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
        _ORIGINAL["add_messages_to_queue"](state, queue, nodes_mapping, f_stop)
        return
    poll_loop(state, queue, nodes_mapping, f_stop)


def poll_loop(
    state: Any, queue: Queue[Any], nodes: set[int] | dict[int, int], f_stop: threading.Event
) -> None:
    """Queue :func:`pending_once`'s messages every :data:`POLL_SECONDS`, as Flower's poller
    does, and at once when :class:`PromptGrid` has stored a message. The flag is lowered
    *before* each pass, so a message stored during a pass raises it again for the next."""
    stored = wakeups(state).messages
    while not f_stop.is_set():
        stored.clear()
        for msg in pending_once(state, nodes):
            queue.put(msg)
        stored.wait(POLL_SECONDS)


def signalling_injector(state: Any, queue: Queue[Any], f_stop: threading.Event) -> None:
    """Drop-in for ``vce_api.put_message_into_state``: Flower's loop (store each reply the
    workers queue), plus a raised :attr:`Wakeups.replies` flag after each stored reply."""
    stored = wakeups(state).replies
    while not f_stop.is_set():
        try:
            reply = queue.get(timeout=1.0)
        except Empty:  # as Flower's: a timeout only to re-check f_stop
            continue
        state.store_message_res(reply)
        stored.set()


class PromptGrid(InMemoryGrid):
    """``InMemoryGrid`` that pulls as soon as a reply is stored, not at the next 0.1 s.

    Its ``pull_interval`` is :data:`PROMPT_PULL_SECONDS`. A call while no reply has been
    stored since the last real pull returns nothing without touching the state, since a
    real pull costs time in proportion to the outstanding messages. Real pulls are also
    spaced so that they take at most :data:`PULL_TIME_SHARE` of the waiting time (a pull
    over 1,000 one-client messages waits for a few replies to gather), and one happens
    :data:`FLOWER_PULL_SECONDS` after the last one ended whatever was stored (Flower's own
    loop sleeps that long after each pull), so Flower's expiry and node-availability errors
    arrive as before and a pull slower than that interval never runs back to back. Pushing
    raises the poller's flag, so new messages reach the workers at once.
    """

    def __init__(self, state_factory: Any, pull_interval: float = PROMPT_PULL_SECONDS) -> None:
        super().__init__(state_factory, pull_interval=min(pull_interval, PROMPT_PULL_SECONDS))
        self._wakeups = wakeups(self.state)
        self._last_pull = float("-inf")  # when the last real pull ended
        self._next_pull = float("-inf")  # earliest next real pull after a stored reply

    def push_messages(self, messages: Iterable[Any]) -> Iterable[str]:
        ids = list(super().push_messages(messages))
        self._wakeups.messages.set()
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Any]:
        now = _clock()
        stored = self._wakeups.replies
        due = now - self._last_pull >= FLOWER_PULL_SECONDS
        if not due and not (stored.is_set() and now >= self._next_pull):
            return []
        stored.clear()  # before the pull: a reply stored during it raises the flag again
        replies = super().pull_messages(message_ids)
        self._last_pull = _clock()
        self._next_pull = now + (self._last_pull - now) / PULL_TIME_SHARE
        return replies


class StickyActorPool(BasicActorPool):
    """``BasicActorPool`` that gives a node's message to the actor that served the node last.

    Flower's ``submit`` pops the last idle actor, so which worker serves a node changes from
    round to round, and a worker that has not served it (or not lately) rebuilds the node's
    clients or reloads their saved state. Here, when the node's last actor is idle it is
    moved to the end of the idle list first, and Flower's ``submit`` then takes it; otherwise
    Flower's choice stands. Moving the actor and taking it happen under one lock that
    returning actors also take, so another thread cannot slip in between.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._last_actor: dict[str, Any] = {}  # node's partition id -> actor that served it

    def submit(self, actor_fn: Any, job: tuple[Any, Any, str, Any]) -> Any:
        node = job[2]  # (app_fn, message, partition id, context)
        with self._lock:
            last = self._last_actor.get(node)
            at = next((i for i, actor in enumerate(self.pool) if actor is last), None)
            if at is not None:
                self.pool.append(self.pool.pop(at))
            future = super().submit(actor_fn, job)
            self._last_actor[node] = self._future_to_actor[future]
        return future

    def add_actor_back_to_pool(self, future: Any) -> None:
        with self._lock:
            super().add_actor_back_to_pool(future)


class OrderedContexts(DeprecatedRunInfoStore):
    """Flower's per-node Context store, where a late reply cannot bring back an older state.

    Flower's simulation worker stores the Context of every reply that completes, in the order
    they complete, including a straggler's that finished after its phase timed out. If the
    node trained meanwhile on another worker, that Context is older than the one stored:
    storing it rolled the node back (``client-state=context``), or named a state file a newer
    save had removed, so every later message of the node failed (``disk``). Here a Context
    that has been through fewer FD train messages (:func:`fedkd.client_app.saves`) than the
    stored one is dropped with a warning; an equal or newer one is stored as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()  # Flower's worker threads update concurrently

    def update_context(self, run_id: int, context: Context) -> None:
        with self._lock:
            stored = self.run_infos[run_id].context if run_id in self.run_infos else None
            if stored is not None and saves(context) < saves(stored):
                log.warning(
                    "node %d: dropped a late reply's Context (%d train messages) older than "
                    "the node's (%d)",
                    self.node_id,
                    saves(context),
                    saves(stored),
                )
                return
            super().update_context(run_id, context)


@contextmanager
def patched_poller() -> Iterator[bool]:
    """Use :func:`indexed_poller`, :func:`signalling_injector`, :class:`PromptGrid`,
    :class:`StickyActorPool` and :class:`OrderedContexts` inside the block; yields whether
    they are in use.

    Restored on exit. If Flower's shape differs from what this adapter knows, Flower's own
    machinery stays (correct, only slower) and one warning says why.
    """
    problem = flower_has_expected_shape()
    if problem is not None:
        log.warning(
            "keeping Flower's own simulation machinery (an O(nodes x messages) poller, 0.1 s "
            "sleeps, no node affinity, late replies' Contexts stored): %s",
            problem,
        )
        yield False
        return
    vce_api, run_simulation, raybackend = _modules()
    swaps = [
        (vce_api, "add_messages_to_queue", indexed_poller),
        (vce_api, "put_message_into_state", signalling_injector),
        (run_simulation, "InMemoryGrid", PromptGrid),
        (raybackend, "BasicActorPool", StickyActorPool),
        (vce_api, "DeprecatedRunInfoStore", OrderedContexts),
    ]
    for module, name, ours in swaps:
        _ORIGINAL[name] = getattr(module, name)
        setattr(module, name, ours)
    try:
        yield True
    finally:
        for module, name, _ in swaps:
            setattr(module, name, _ORIGINAL.pop(name))

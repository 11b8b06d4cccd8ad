"""An in-process Flower ``Grid``: runs a real ServerApp against real ClientApps, no Ray.

For fast tests, debugging with a plain debugger, and the benchmark that isolates framework
overhead. Each message is delivered by calling the ClientApp in this process, with one
persistent ``Context`` per node (as a SuperNode keeps), so handler code paths are the same
as under the Ray simulation engine or a deployed SuperNode.

This module touches two Flower internals (kept here, nowhere else): the process-wide task
identity that ``Message(...)`` reads, and the message id a SuperLink would assign. Both are
checked against flwr 1.41; if Flower moves them, only this file changes.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flwr.app import Array, ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.task_identity import TaskIdentity  # internal, see module docstring

from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, to_run_config
from strategies.fed_distill import RoundRecord
from strategies.server_app import make_server_app

SERVER_NODE_ID = 1  # Flower's SUPERLINK_NODE_ID
RUN_ID = 1


class LocalGrid(Grid):
    """Delivers every message synchronously to an in-process ClientApp."""

    def __init__(
        self,
        client_app: ClientApp,
        num_nodes: int,
        *,
        run_config: Mapping[str, Any] | None = None,
        node_configs: list[dict[str, Any]] | None = None,
    ) -> None:
        self.client_app = client_app
        self._node_ids = [1000 + i for i in range(num_nodes)]
        configs = node_configs or [
            {"partition-id": i, "num-partitions": num_nodes} for i in range(num_nodes)
        ]
        self.contexts = {
            node_id: Context(
                run_id=RUN_ID,
                node_id=node_id,
                node_config=dict(cfg),
                state=RecordDict(),
                run_config=dict(run_config or {}),
            )
            for node_id, cfg in zip(self._node_ids, configs, strict=True)
        }
        self._replies: dict[str, Message] = {}
        self._seconds: dict[str, float] = {}  # message id → how long its handler took

    # ------------------------------------------------------------------ Grid API
    def set_run(self, run: Any) -> None:
        return None

    @property
    def run(self) -> Any:
        raise NotImplementedError("LocalGrid has no Run object")

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError("use the Message constructor")

    def get_node_ids(self) -> Iterable[int]:
        """All in-process nodes."""
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now; keep the reply for :meth:`pull_messages`."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # what a SuperLink assigns
            started = time.perf_counter()
            self._replies[msg.metadata.message_id] = self._deliver(msg)
            self._seconds[msg.metadata.message_id] = time.perf_counter() - started
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies to the given message ids (each returned once)."""
        ids = [i for i in message_ids if i in self._replies]
        for i in ids:
            self._seconds.pop(i, None)
        return [self._replies.pop(i) for i in ids]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Every reply of :meth:`iter_replies`, in one list (Flower's form)."""
        return list(self.iter_replies(messages, timeout=timeout))

    def iter_replies(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterator[Message]:
        """Deliver the messages one after another, yielding each reply as it is made; a reply
        whose handler took longer than ``timeout`` is dropped.

        Nodes are served one after another here but would run side by side on a SuperLink, so
        each reply is judged by its own handling time: a straggler (``fedkd.faults``) is missing,
        exactly as under Ray, and the clients served after it are not. Yielding one reply at a
        time lets the server fold and drop it before the next is made
        (``strategies.receive``), so in process too a phase's replies are never all held.
        """
        for msg in messages:
            (message_id,) = self.push_messages([msg])
            late = timeout is not None and self._seconds.get(message_id, 0.0) > timeout
            (reply,) = self.pull_messages([message_id])
            if not late:
                yield reply
            del reply

    # ------------------------------------------------------------------ delivery
    def _deliver(self, msg: Message) -> Message:
        context = self.contexts[msg.metadata.dst_node_id]
        inbound = _wire_copy(msg)
        # Served in turn here, side by side on a SuperLink: each node gets its message now.
        inbound.metadata.created_at = time.time()
        before = dict(context.state.items())  # the records, not copies: handlers replace them
        try:
            reply = self.client_app(inbound, context)
        except Exception as exc:  # a crashing client becomes an error reply, as in Flower,
            # and, as in Flower, keeps the Context it had: its changes died with the worker
            context.state = RecordDict(before)
            return Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=inbound)
        reply.metadata.__dict__["_message_id"] = uuid.uuid4().hex
        return reply


def _wire_copy(msg: Message) -> Message:
    """A copy that shares no objects with the original, as if it had crossed a wire."""
    import copy

    content = RecordDict()
    for name, record in msg.content.items():
        if isinstance(record, ArrayRecord):
            content[name] = ArrayRecord(
                {
                    k: Array(dtype=a.dtype, shape=a.shape, stype=a.stype, data=bytes(a.data))
                    for k, a in record.items()
                }
            )
        else:
            content[name] = copy.deepcopy(record)
    # Flower 1.41 builds a Message from metadata and content internally (as its message store
    # does), but its typed overloads leave that form out: a stub gap, not a misuse.
    return Message(metadata=copy.deepcopy(msg.metadata), content=content)  # type: ignore[call-overload]


def run_local(
    server_app: ServerApp, client_app: ClientApp, num_nodes: int, **grid_kwargs: Any
) -> LocalGrid:
    """Run ``server_app`` to completion against ``num_nodes`` in-process clients."""
    grid = LocalGrid(client_app, num_nodes, **grid_kwargs)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SERVER_NODE_ID
    context = Context(
        run_id=RUN_ID,
        node_id=SERVER_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(grid_kwargs.get("run_config") or {}),
    )
    server_app(grid, context)
    return grid


def run_fd_local(cfg: FDConfig, client_app: ClientApp | None = None) -> list[RoundRecord]:
    """Run the fedkd apps for ``cfg`` in process and return every round's record.

    The one place tests and benchmarks get "a whole run, in process" from: the real ServerApp
    and ClientApp (or ``client_app``, e.g. a wrapped one that misbehaves), no Ray.
    """
    run_config = to_run_config(cfg)
    records: list[RoundRecord] = []
    run_local(
        make_server_app(run_config, [records.append]),
        client_app if client_app is not None else make_client_app(run_config),
        cfg.num_nodes,
    )
    return records

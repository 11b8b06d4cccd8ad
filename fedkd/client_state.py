"""Where a simulated client's state waits between rounds, and which live clients a process keeps.

Flower's ``Context.state`` persists per node, but under the Ray simulation engine the driver
ships each node's whole context to the worker with every message and back (47.5 KB for the
MLP, 430 KB for the CNN: gigabytes held by the driver for a large population). With
``client-state=disk`` the state is a file keyed by run and node and ``Context.state`` only
carries a token naming the latest save; a worker that served the node last still has the live
client (:class:`LiveClients`) and reads nothing, any other worker reads the file. The token makes
the rule explicit: a node served by another worker in between always sees its latest state, and
a stale or missing file is an error, never a silent reset.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["LiveClients", "StateFiles", "default_state_dir"]

T = TypeVar("T")
_TOKEN_BYTES = 32  # uuid4().hex
_MADE: set[Path] = set()  # state directories this process has created


def default_state_dir() -> Path:
    """``<system temp>/fedkd-client-state``: local to the machine, like the workers."""
    return Path(tempfile.gettempdir()) / "fedkd-client-state"


class StateFiles:
    """One file per saved state, named by (run, node, token), removed one save after it is
    superseded (the ClientApp keeps the older token in the node's record as ``prior``).

    The file a node's ``Context`` names outlives the save that supersedes it, because that
    save's worker may die before its reply reaches the driver: Flower then keeps the old
    ``Context`` (it is updated only from a reply), whose next message must find its file. So a
    node keeps at most two files per member; a death leaves the files its message wrote (one
    per member saved alone, or its group's) until the run's directory is removed.

    The token in the file name makes a read exact: a worker asks for the state the node's
    ``Context`` names, and either finds exactly that file or fails loudly. Two runs that share
    a run id (in-process runs all use run 1) and a directory never read each other's files.
    """

    def __init__(self, root: str | Path = "") -> None:
        self.root = Path(root) if root else default_state_dir()

    def path(self, run_id: int, node_id: int, token: str, kind: str = "") -> Path:
        """Where the state ``token`` of node ``node_id`` in run ``run_id`` is kept; ``kind``
        ``"group"``: a vectorized group's stacked states, saved by the node serving it."""
        if len(token) != _TOKEN_BYTES or not token.isalnum():
            raise ValueError(f"token must be {_TOKEN_BYTES} letters or digits")
        infix = f".{kind}" if kind else ""
        return self.root / f"run-{run_id}" / f"node-{node_id}{infix}.{token}.pt"

    def write(
        self,
        run_id: int,
        node_id: int,
        token: str,
        blob: bytes,
        previous: str | None = None,
        kind: str = "",
    ) -> None:
        """Keep ``blob`` as state ``token``, then drop ``previous``: the node's state file
        from the save before the one its ``Context`` names now.

        Written in place, no temporary file and rename: a file is only ever read under a token
        some ``Context`` names, and the token reaches the ``Context`` after this returns, so a
        half-written file (a worker killed mid-write) is never read as a state: the node's
        ``Context`` still names its previous file.
        """
        path = self.path(run_id, node_id, token, kind)
        if path.parent not in _MADE:  # one mkdir per directory and process, not per save
            path.parent.mkdir(parents=True, exist_ok=True)
            _MADE.add(path.parent)
        try:
            path.write_bytes(blob)
        except FileNotFoundError:  # the directory went away (a run cleaned up): make it again
            _MADE.discard(path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
        if previous and previous != token:
            self.remove(run_id, node_id, previous, kind)

    def remove(self, run_id: int, node_id: int, token: str, kind: str = "") -> None:
        """Drop a state file nobody names any more (gone already is fine)."""
        self.path(run_id, node_id, token, kind).unlink(missing_ok=True)

    def read(self, run_id: int, node_id: int, token: str, kind: str = "") -> bytes:
        """The blob saved as ``token``; ``LookupError`` when that file is not there."""
        path = self.path(run_id, node_id, token, kind)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise LookupError(
                f"client state {path} is missing: with client-state=disk every worker must see "
                "client-state-dir (one machine or a shared filesystem); use client-state=context "
                "on a multi-machine cluster"
            ) from None


class LiveClients(Generic[T]):
    """Clients kept alive in this process between messages, bounded by memory, not by count.

    Rebuilding a client from its saved state on every message (build the model, load its state)
    is what unpinned workers need in general; but when the same worker serves the same node
    again and nobody else touched the node's state since, the live object *is* that state. Each
    save stamps a fresh token; a live client is reused only when the token (and the run config)
    still match, so a node served meanwhile by another worker is rebuilt from its state.

    Why bytes: a fixed count (it was 64) never hits once a process serves more clients than
    that per round, because clients come back in a fixed cycle (LRU's worst case), so every
    message rebuilt its client. The budget is ``max_bytes``; each entry's size is given by the
    caller (its state blob plus its private data is a fair estimate).
    """

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = max_bytes  # 0 turns reuse off
        self.bytes = 0
        self._items: OrderedDict[tuple[int, int], tuple[str, T, int, object]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[int, int], token: str, owner: object) -> T | None:
        """The live client of ``key`` if it is the state named ``token`` under ``owner``
        (the run config it was built for), else ``None``."""
        item = self._items.get(key)
        if item is None or item[0] != token or item[3] != owner:
            return None
        self._items.move_to_end(key)
        return item[1]

    def stale(self, key: tuple[int, int], owner: object) -> T | None:
        """The live client of ``key`` under ``owner`` whatever state it holds: the object to
        load a newer saved state into instead of building the client again (its data and
        architecture are those of ``key`` under ``owner``; its state is about to be replaced)."""
        item = self._items.get(key)
        if item is None or item[3] != owner:
            return None
        return item[1]

    def put(self, key: tuple[int, int], token: str, client: T, size: int, owner: object) -> None:
        """Keep ``client`` (about ``size`` bytes) as the state named ``token``."""
        self.drop(key)
        if size > self.max_bytes:
            return
        self._items[key] = (token, client, size, owner)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, _, dropped, _) = self._items.popitem(last=False)
            self.bytes -= dropped

    def drop(self, key: tuple[int, int]) -> None:
        """Forget ``key`` (its live object may no longer be its saved state)."""
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[2]

    def resize(self, max_bytes: int) -> None:
        """Change the budget (the run config says how much), dropping the oldest to fit."""
        self.max_bytes = max_bytes
        while self.bytes > self.max_bytes and self._items:
            _, (_, _, dropped, _) = self._items.popitem(last=False)
            self.bytes -= dropped

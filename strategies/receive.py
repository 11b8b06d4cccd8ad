"""Replies as they arrive: the one place fedkd re-implements Flower's receive loop.

Checked against flwr 1.41 (``flwr.serverapp.Grid``; ``InMemoryGrid`` and ``HttpGrid`` in
``flwr.superlink.grid``). Their ``send_and_receive`` pushes a phase's messages,
then calls ``pull_messages`` for the outstanding ids until all have answered or ``timeout``
seconds have passed (``timeout=None``: wait for all), sleeping between pulls (``pull_interval``,
0.1 s in the in-memory grid; a fixed 3 s in the deployed one) — and returns every reply in one
list. Why that matters here: a reply carries ``samples × classes`` soft labels (codec ``none``:
4 bytes each), so a 1,000-client phase at 2,000 rows × 100 classes holds 763 MiB of encoded
replies at once, whatever the aggregation rule needs. :func:`arrivals` runs the same loop
but yields each pull's replies as soon as they are pulled, so a caller that validates, folds
and drops them holds only one poll's worth (see ``FedDistill.exchange``).

Kept identical to Flower's loop: push first, ``end = time.time() + (timeout or 0)``, loop
while ``timeout is None or time.time() < end`` (so ``timeout=0`` pulls nothing, as Flower's
does), stop once no id is outstanding, sleep the grid's ``pull_interval`` (3 s when the grid
has none, as the deployed grid) between pulls. What differs: replies are handed over per pull.

Three kinds of grid (:func:`mode`):

* ``"poll"``: Flower's grids and any grid whose ``push_messages``/``pull_messages`` are what
  its ``send_and_receive`` uses: the loop above.
* ``"iter"``: an in-process grid that delivers messages itself and offers
  ``iter_replies(messages, timeout=...)`` (:class:`ReplyStream`; ``simulations.local_grid``):
  one reply at a time, with that grid's own timeout semantics.
* ``"held"``: a grid whose ``send_and_receive`` is overridden below the class that defines
  its pulling (test doubles that drop, duplicate or fabricate replies there): its
  ``send_and_receive`` is the truth, so it is called and its replies come as one batch.

When Flower offers per-reply delivery itself (a callback or iterator on ``Grid``), delete this
module and call that.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from flwr.app import Message
from flwr.serverapp import Grid

TESTED_FLWR = ("1.41",)
"""Flower minor versions whose receive loop this module was checked against (a test asserts
the installed one is listed: on an upgrade, re-read ``send_and_receive`` and update)."""

DEPLOYED_PULL_INTERVAL = 3.0
"""Seconds flwr 1.41's deployed grid sleeps between pulls (it has no ``pull_interval``)."""

Mode = Literal["poll", "iter", "held"]


@runtime_checkable
class ReplyStream(Protocol):
    """A grid that can hand replies over one at a time itself (an in-process grid)."""

    def iter_replies(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterator[Message]: ...


def _definer(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose own ``__dict__`` defines ``name``."""
    return next((c for c in cls.__mro__ if name in c.__dict__), None)


def mode(grid: Any) -> Mode:
    """How :func:`arrivals` receives from ``grid`` (see the module docstring)."""
    cls = type(grid)
    sar = _definer(cls, "send_and_receive")
    source = "iter_replies" if isinstance(grid, ReplyStream) else "pull_messages"
    pulls = _definer(cls, source)
    if sar is None or pulls is None or not issubclass(pulls, sar):
        return "held"  # send_and_receive is more specific than the pulling: honour it
    return "iter" if source == "iter_replies" else "poll"


def arrivals(
    grid: Grid, messages: Iterable[Message], timeout: float | None
) -> Iterator[list[Message]]:
    """Replies to ``messages`` in the batches they are pulled in (see the module docstring).

    The caller should drop each batch before asking for the next: that is the point.
    """
    how = mode(grid)
    if how == "held":
        yield list(grid.send_and_receive(messages, timeout=timeout))
        return
    if how == "iter":
        for reply in grid.iter_replies(messages, timeout=timeout):  # type: ignore[attr-defined]
            yield [reply]
        return
    outstanding = set(grid.push_messages(messages))
    interval = float(getattr(grid, "pull_interval", DEPLOYED_PULL_INTERVAL))
    end_time = time.time() + (timeout if timeout is not None else 0.0)
    while timeout is None or time.time() < end_time:
        pulled = list(grid.pull_messages(outstanding))
        outstanding.difference_update(m.metadata.reply_to_message_id for m in pulled)
        if pulled:
            yield pulled
        del pulled
        if not outstanding:
            break
        time.sleep(interval)

"""The fedkd Flower ClientApp: train, query (soft predictions) and evaluate handlers.

The same app runs in Flower's Ray simulation and on real devices under a SuperNode. Who the
client is comes from ``Context.node_config`` (``partition-id``/``num-partitions`` for simulated
and demo clients, ``data-path`` for a device's own data (:mod:`fedkd.device_data`), optionally
``model`` to pick the architecture); how the run is configured comes from ``Context.run_config``
(see :mod:`fedkd.config`). Model and optimizer state persist in ``Context.state`` (or, with
``client-state=disk``, in a file named by a token kept there: :mod:`fedkd.client_state`)
because simulation workers are not pinned to clients. With ``clients-per-message`` K > 1 a
simulated node is a cohort of K virtual clients (:class:`Member`): one FD message names the
slots to serve, each is served in turn with its own state, and the reply holds each one's
records (:func:`fedkd.protocol.cohort_reply_content`; the server splits it,
:mod:`strategies.cohorts`). With ``vectorize-cohort`` a batched group's members are saved as
one stacked state (:func:`_save_group`), each member's record naming the group and its row.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from fedkd import client_fcl, faults, state_blob, vectorized
from fedkd import protocol as P
from fedkd.client import ClientData, FDClient, RoundOutcome, load_client_data, train_from_global
from fedkd.client_state import LiveClients, StateFiles
from fedkd.config import FDConfig, from_run_config
from fedkd.device_data import load_device_data

log = logging.getLogger(__name__)
STATE_KEY = "fedkd-client"  # Context.state ConfigRecord holding the model/optimizer blob
GROUPS_KEY = f"{STATE_KEY}.groups"  # the node's saved vectorized-group states, by token
SAVES_KEY = f"{STATE_KEY}.saves"  # how many FD train messages the node's Context has seen
# Flower's code for "the ClientApp raised" (flwr.common.constant.ErrorCode, a compatibility
# module we do not import): a simulated crash reads on the server exactly like a real one.
CLIENT_APP_RAISED_EXCEPTION = 2


def make_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """Build the ClientApp; ``run_config`` overrides ``Context.run_config`` (simulation driver).

    Under Flower's Python simulation entry point the context's run-config is empty, so the
    driver binds the run's configuration here instead; under ``flwr run`` it comes from the
    app's ``pyproject.toml`` and ``--run-config``.
    """
    app = ClientApp()

    def config_of(context: Context) -> FDConfig:
        return _config(run_config if run_config is not None else context.run_config)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        cfg = config_of(context)
        if P.carries_weights(msg.content):  # FedAvg / FedDF baselines
            return _weights_train(msg, context, cfg)
        reply = _fd_round(msg, context, cfg, train=True)
        context.state[SAVES_KEY] = ConfigRecord({"n": saves(context) + 1})
        return reply

    @app.query("soft_labels")
    def query(msg: Message, context: Context) -> Message:
        return _fd_round(msg, context, config_of(context), train=False)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        cfg = config_of(context)
        if cfg.clients_per_message > 1:  # FD evaluates centrally; a cohort has no one model
            reason = "evaluate serves one client per node (clients-per-message > 1)"
            return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
        client = _restore(context, cfg)
        return Message(RecordDict({P.METRICS: MetricRecord(client.evaluate())}), reply_to=msg)

    # federated continual learning (fedkd.client_fcl): the run's spec travels in the message
    app.train("fcl")(client_fcl.train)
    app.evaluate("fcl")(client_fcl.evaluate)

    return app


def saves(context: Context) -> int:
    """How many FD train messages this node's ``Context`` has been through (0: none).

    A node's state only moves forward, so a Context that has been through fewer than the one
    a simulation holds is an older one coming back (a straggler's reply that completed after
    the node trained again elsewhere): :class:`simulations.flower_poller.OrderedContexts`
    keeps the newer one.
    """
    record = context.state.get(SAVES_KEY)
    count = record.get("n") if isinstance(record, ConfigRecord) else None
    return count if isinstance(count, int) else 0


def _config(mapping: Mapping[str, Any]) -> FDConfig:
    """The run's validated config, built once per process and run-config (not per message:
    validation costs about half a millisecond, a tenth of a tiny client's round)."""
    try:
        return _config_cached(tuple(sorted(mapping.items())))
    except TypeError:  # an unhashable value: validate without the cache
        return from_run_config(mapping)


@functools.lru_cache(maxsize=8)
def _config_cached(items: tuple[tuple[str, Any], ...]) -> FDConfig:
    return from_run_config(dict(items))


def _identity(context: Context, cfg: FDConfig) -> tuple[int, int, str]:
    """(partition id, number of partitions, model name) of this node."""
    node = context.node_config
    partition_id = int(node.get("partition-id", 0))
    num_partitions = int(node.get("num-partitions", cfg.num_clients))
    model = str(node.get("model", cfg.model_for_partition(partition_id)))
    return partition_id, num_partitions, model


def _data(context: Context, cfg: FDConfig, partition_id: int, num_partitions: int) -> ClientData:
    """A device's own data when its node config has ``data-path``, else the simulated partition."""
    device = load_device_data(cfg, context.node_config)
    return device if device is not None else load_client_data(cfg, partition_id, num_partitions)


LIVE_CLIENTS: LiveClients[FDClient] = LiveClients()
Part = RecordDict | tuple[int, str]  # a member's reply records, or (error code, reason)


@dataclass(frozen=True)
class Member:
    """Who one client served by this node is, and where its state lives.

    A node serves one client (its ``Context.state[STATE_KEY]``, keyed by node id), or, with
    ``clients-per-message`` K > 1, a cohort: slot ``s`` is virtual client ``node·K + s`` of
    partition ``partition·K + s`` out of ``num-partitions·K``, with its own state record
    ``STATE_KEY.<s>`` and its own state file and live-client entry keyed by that virtual id.
    """

    run_id: int
    client_id: int  # node id, or the virtual client id node·K + slot
    node_id: int  # the Flower node serving it
    state_key: str
    partition_id: int
    num_partitions: int
    model: str
    device_data: bool = True  # a node's own data (node config data-path) may stand in

    @property
    def key(self) -> tuple[int, int]:
        return self.run_id, self.client_id


def _node_member(context: Context, cfg: FDConfig) -> Member:
    partition_id, num_partitions, model = _identity(context, cfg)
    run_id, node_id = int(context.run_id), int(context.node_id)
    return Member(run_id, node_id, node_id, STATE_KEY, partition_id, num_partitions, model)


def _cohort_member(context: Context, cfg: FDConfig, slot: int) -> Member:
    """Slot ``slot`` of this node's cohort (see :class:`Member`)."""
    k = cfg.clients_per_message
    if not 0 <= slot < k:
        raise ValueError(f"cohort slot {slot} outside [0, clients-per-message={k})")
    if "data-path" in context.node_config:
        raise ValueError("a node with its own data (data-path) serves one client, not a cohort")
    node = context.node_config
    node_partition = int(node.get("partition-id", 0))
    num_nodes = int(node.get("num-partitions", cfg.num_nodes))
    partition_id = node_partition * k + slot
    run_id, node_id = int(context.run_id), int(context.node_id)
    return Member(
        run_id,
        node_id * k + slot,
        node_id,
        f"{STATE_KEY}.{slot}",
        partition_id,
        num_nodes * k,
        cfg.model_for_partition(partition_id),
        device_data=False,
    )


def _restore(context: Context, cfg: FDConfig, member: Member | None = None) -> FDClient:
    """This client's live object if it is the latest state, else rebuilt from that state.

    Rebuilding reuses this process's older object of the same client when there is one (it
    was served here before, then by another worker): loading the saved state into it gives
    the same model, optimizer and ledger as a new build (same data, same architecture) for
    a sixth of the cost, which is what a cohort landing on another worker pays per member.
    """
    member = member or _node_member(context, cfg)
    LIVE_CLIENTS.resize(cfg.live_client_mib * 2**20)
    record = _state_record(context, member)
    if record is not None and "token" in record:
        live = LIVE_CLIENTS.get(member.key, str(record["token"]), cfg)
        if live is not None:
            return live
    saved = _saved(context, cfg, member, record)
    client = LIVE_CLIENTS.stale(member.key, cfg) if saved is not None else None
    if client is None:
        if member.device_data:
            data = _data(context, cfg, member.partition_id, member.num_partitions)
        else:
            data = load_client_data(cfg, member.partition_id, member.num_partitions)
        client = FDClient(cfg, data, member.model, member.partition_id)
    if isinstance(saved, bytes):
        client.load_state_bytes(saved)
    elif saved is not None:
        client.load_state(saved)
    return client


def _saved(
    context: Context, cfg: FDConfig, member: Member, record: ConfigRecord | None
) -> bytes | dict[str, Any] | None:
    """The member's saved state: its own blob, or its row of a vectorized group's stacked
    state (:func:`_save_group`); ``None`` before its first save."""
    if record is None:
        return None
    if "group" in record:
        tree = _group_tree(context, cfg, member, str(record["group"]))
        return state_blob.row(tree, int(record["row"]))  # type: ignore[arg-type]
    if "blob" in record:
        return record["blob"]  # type: ignore[return-value]
    # client-state=disk: only the token travelled
    return StateFiles(cfg.client_state_dir).read(*member.key, str(record["token"]))


_GROUP_TREES: OrderedDict[tuple[int, int, str], Any] = OrderedDict()  # the last groups decoded


def _group_tree(context: Context, cfg: FDConfig, member: Member, token: str) -> Any:
    """A saved group's stacked state, decoded once for all its members (they are restored
    one after another in one message): the last two groups are kept."""
    key = (member.run_id, member.node_id, token)
    tree = _GROUP_TREES.get(key)
    if tree is None:
        record = context.state.get(group_state_key(token))
        if isinstance(record, ConfigRecord):
            blob = record["blob"]
        else:
            files = StateFiles(cfg.client_state_dir)
            blob = files.read(member.run_id, member.node_id, token, kind="group")
        tree = state_blob.loads(blob)  # type: ignore[arg-type]
        _GROUP_TREES[key] = tree
        while len(_GROUP_TREES) > 2:
            _GROUP_TREES.popitem(last=False)
    return tree


def group_state_key(token: str) -> str:
    """The ``Context.state`` key of a vectorized group's stacked state (client-state=context)."""
    return f"{STATE_KEY}.group.{token}"


def _state_record(context: Context, member: Member) -> ConfigRecord | None:
    """The member's state record, read directly: ``RecordDict.config_records`` copies every
    config record of the node on each call (0.2 ms with a cohort's K records)."""
    record = context.state.get(member.state_key)
    return record if isinstance(record, ConfigRecord) else None


def _save(context: Context, client: FDClient, member: Member) -> None:
    """Name the client's new state with a fresh token; keep it where the config says."""
    token = uuid.uuid4().hex
    # the client checkpoint written at the end of training holds the same bytes
    blob = client.fresh_blob or client.state_bytes()
    client.fresh_blob = None
    if client.cfg.client_state == "disk":
        old = _state_record(context, member)
        files = StateFiles(client.cfg.client_state_dir)
        files.write(*member.key, token, blob, previous=_prior(old))
        context.state[member.state_key] = ConfigRecord({"token": token, **_keeping(old)})
    else:
        context.state[member.state_key] = ConfigRecord({"blob": blob, "token": token})
    client.restored = True  # its state is current: no need to reload a disk checkpoint
    size = len(blob) + client.data.train_x.nbytes + client.data.train_y.nbytes
    LIVE_CLIENTS.put(member.key, token, client, size, client.cfg)


def _prior(record: ConfigRecord | None) -> str | None:
    """The member's state file that its record keeps one save longer: removed at this save."""
    return str(record["prior"]) if record is not None and "prior" in record else None


def _keeping(old: ConfigRecord | None) -> dict[str, str]:
    """What a new disk record keeps of the ``old`` one: the old state's own file, as ``prior``.

    A save does not remove the file the node's ``Context`` names: a worker that dies after
    saving, before its reply reaches the driver, leaves the driver with that ``Context``
    (Flower updates it only from a reply), and its next message must find the file. The file
    goes at the save after, when the ``Context`` that arrives names the newer state.
    """
    if old is None or "token" not in old or "group" in old or "blob" in old:
        return {}
    return {"prior": str(old["token"])}


def _save_group(context: Context, cfg: FDConfig, served: Sequence[tuple[Member, FDClient]]) -> bool:
    """Save a vectorized group's trained members as one stacked state (one serialisation and
    one file or record for the group, not one per member; each member's record names the
    group and its row). ``False`` when their states do not stack: each then saves its own."""
    tree = state_blob.stack([client.state_tree() for _, client in served])
    if tree is None:
        return False
    blob = state_blob.dumps(tree)
    token = uuid.uuid4().hex
    first = served[0][0]
    disk = cfg.client_state == "disk"
    files = StateFiles(cfg.client_state_dir)
    if disk:
        files.write(first.run_id, first.node_id, token, blob, kind="group")
    else:
        context.state[group_state_key(token)] = ConfigRecord({"blob": blob})
    for row, (member, client) in enumerate(served):
        old = _state_record(context, member)
        kept: dict[str, str] = {}
        if disk:
            if prior := _prior(old):
                files.remove(*member.key, prior)
            kept = _keeping(old)  # its own file, superseded by the group's: one save longer
        member_token = uuid.uuid4().hex
        context.state[member.state_key] = ConfigRecord(
            {"token": member_token, "group": token, "row": row, **kept}
        )
        client.fresh_blob = None
        client.restored = True
        size = len(blob) // len(served) + client.data.train_x.nbytes + client.data.train_y.nbytes
        LIVE_CLIENTS.put(member.key, member_token, client, size, client.cfg)
    return True


def _prune_groups(context: Context, cfg: FDConfig, run_id: int, node_id: int) -> None:
    """Drop the node's saved group states that no member's record has named for a message."""
    named = {
        str(record["group"])
        for record in context.state.values()
        if isinstance(record, ConfigRecord) and "group" in record
    }
    known = context.state.get(GROUPS_KEY)
    previous, retired = _group_tokens(known, "tokens"), _group_tokens(known, "retired")
    if cfg.client_state == "disk":  # a file goes one message after nobody names it (_keeping)
        for token in retired - named:
            StateFiles(cfg.client_state_dir).remove(run_id, node_id, token, kind="group")
        retired = previous - named
    else:  # in the Context: a death discards this Context whole, its old records with it
        for token in previous - named:
            context.state.pop(group_state_key(token), None)
        retired = set()
    lists = {"tokens": sorted(named), "retired": sorted(retired)}
    if any(lists.values()):
        context.state[GROUPS_KEY] = ConfigRecord({k: v for k, v in lists.items() if v})
    elif known is not None:
        del context.state[GROUPS_KEY]


def _group_tokens(known: object, key: str) -> set[str]:
    """The group tokens listed under ``key`` in the node's ``GROUPS_KEY`` record (none yet:
    empty)."""
    tokens = known.get(key, []) if isinstance(known, ConfigRecord) else []
    return {str(t) for t in tokens} if isinstance(tokens, list) else set()


def _fd_round(msg: Message, context: Context, cfg: FDConfig, *, train: bool) -> Message:
    """One FD round for this node's client, or for each member of its cohort in turn."""
    req = P.parse_request(msg.content)
    slots = P.cohort_slots(msg.content)
    if slots is None:
        part = _serve(msg, context, cfg, req, _node_member(context, cfg), train=train)
        if isinstance(part, tuple):
            return Message(Error(code=part[0], reason=part[1]), reply_to=msg)
        return Message(part, reply_to=msg)
    if cfg.vectorize_cohort:
        vectorized_parts = _serve_vectorized(msg, context, cfg, req, slots, train=train)
        return Message(P.cohort_reply_content(vectorized_parts), reply_to=msg)
    parts: dict[int, Part] = {}
    for slot in slots:
        try:
            member = _cohort_member(context, cfg, slot)
            parts[slot] = _serve(msg, context, cfg, req, member, train=train, contain=True)
        except Exception as exc:  # a bad slot: that member's error, not the cohort's
            parts[slot] = _error_part(exc)
    return Message(P.cohort_reply_content(parts), reply_to=msg)


def _error_part(exc: BaseException) -> tuple[int, str]:
    return CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"


def _serve_vectorized(
    msg: Message,
    context: Context,
    cfg: FDConfig,
    req: P.RoundRequest,
    slots: list[int],
    *,
    train: bool,
) -> dict[int, Part]:
    """``vectorize-cohort``: the cohort's homogeneous members in one batched call
    (:mod:`fedkd.vectorized`), the others one by one as without it; parts in slot order."""
    parts: dict[int, Part] = {}
    served: dict[int, tuple[Member, FDClient]] = {}
    for slot in slots:
        try:
            member = _cohort_member(context, cfg, slot)
            served[slot] = (member, _restore(context, cfg, member))
        except Exception as exc:  # a bad slot: that member's error, not the cohort's
            parts[slot] = _error_part(exc)
    groups, singles = vectorized.plan({s: c for s, (_, c) in served.items()}, req, train=train)
    for group in groups:
        outcomes = vectorized.run_group([served[s][1] for s in group], req, train=train)
        if outcomes is None:  # the batched call failed: one by one, as without the option
            singles += group
            continue
        done: list[tuple[int, RoundOutcome]] = []
        for slot, outcome in zip(group, outcomes, strict=True):
            member, client = served[slot]
            if isinstance(outcome, Exception):
                LIVE_CLIENTS.drop(member.key)
                log.error(
                    "client %d (partition %d) failed: %s",
                    member.client_id,
                    member.partition_id,
                    outcome,
                    exc_info=outcome,
                )
                parts[slot] = _error_part(outcome)
            else:
                done.append((slot, outcome))
        saved = train and len(done) > 1 and _save_group(context, cfg, [served[s] for s, _ in done])
        for slot, outcome in done:
            member, client = served[slot]
            parts[slot] = _reply(
                msg, context, req, member, client, outcome, train=train, save=not saved
            )
    for slot in singles:
        member, client = served[slot]
        parts[slot] = _serve(
            msg, context, cfg, req, member, train=train, contain=True, client=client
        )
    if train and served:
        first = next(iter(served.values()))[0]
        _prune_groups(context, cfg, first.run_id, first.node_id)
    return {s: parts[s] for s in slots}


def _serve(
    msg: Message,
    context: Context,
    cfg: FDConfig,
    req: P.RoundRequest,
    member: Member,
    *,
    train: bool,
    contain: bool = False,
    client: FDClient | None = None,
) -> Part:
    """One client's round: its reply records, or ``(code, reason)`` when it failed.

    An injected fault is always a one-line error. Any other exception propagates (Flower
    reports the crash) unless ``contain``: in a cohort one member's crash is that member's
    error, logged with its traceback, and the other members' replies go out. ``client``: the
    member already restored (a vectorized cohort's fallback).
    """
    if client is None:
        client = _restore(context, cfg, member)
    faults.straggle(
        cfg, client.partition_id, req.server_round, msg.metadata.message_type, msg.metadata
    )
    try:
        outcome = client.run_round(req, train=train)
    except faults.InjectedFault as fault:  # one log line, not the stack trace of a real crash
        LIVE_CLIENTS.drop(member.key)  # it may have trained without saving: not the state
        log.warning("%s", fault)
        return CLIENT_APP_RAISED_EXCEPTION, str(fault)
    except Exception as exc:
        LIVE_CLIENTS.drop(member.key)
        if not contain:
            raise
        log.exception("client %d (partition %d) failed", member.client_id, member.partition_id)
        return _error_part(exc)
    return _reply(msg, context, req, member, client, outcome, train=train)


def _reply(
    msg: Message,
    context: Context,
    req: P.RoundRequest,
    member: Member,
    client: FDClient,
    outcome: RoundOutcome,
    *,
    train: bool,
    save: bool = True,
) -> RecordDict:
    """A served member's reply records; a trained member's new state saved first (unless
    ``save`` is off: its group saved it, :func:`_save_group`)."""
    if train and save:
        _save(context, client, member)
    echo = P.Echo(req.server_round, msg.metadata.message_type, req.public_hash)
    return P.reply_content(
        outcome.payload,
        outcome.metrics,
        model_name=client.model_name,
        codec=req.codec,
        support=outcome.support,
        echo=echo,
    )


def _weights_train(msg: Message, context: Context, cfg: FDConfig) -> Message:
    """FedAvg's and FedDF's client step: start from the weights sent, train, send them back.

    FedAvg sends one model (``arrays``) that every client trains. FedDF sends each architecture
    group's weights as ``arrays.<model>``; a client trains its own architecture's, and says
    which it is in the reply's meta record so the server can average within groups.
    """
    partition_id, num_partitions, own_model = _identity(context, cfg)
    records = msg.content.array_records
    group_key = P.group_arrays_key(own_model)
    if group_key in records:
        model, weights_in = own_model, records[group_key]
    elif P.ARRAYS in records:
        model, weights_in = cfg.student_model, records[P.ARRAYS]
    else:
        reason = f"no weights for this client's architecture {own_model!r} (sent: {list(records)})"
        log.warning("%s", reason)
        return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)
    data = _data(context, cfg, partition_id, num_partitions)
    client = FDClient(cfg, data, model, partition_id)
    flwr_cfg = msg.content.config_records.get(P.CONFIG, ConfigRecord())
    round_value = flwr_cfg.get("server-round", 0)
    server_round = round_value if isinstance(round_value, int) else 0
    weights, metrics = train_from_global(
        client,
        weights_in.to_torch_state_dict(),
        server_round=server_round,
        epochs=cfg.local_epochs,
        lr=cfg.lr,
    )
    content = RecordDict(
        {
            P.ARRAYS: ArrayRecord(weights),
            P.METRICS: MetricRecord(metrics),
            P.META: ConfigRecord({P.MODEL_NAME: model}),
        }
    )
    return Message(content, reply_to=msg)


# `flwr run .` loads this object (pyproject: [tool.flwr.app.components] clientapp).
app = make_client_app()

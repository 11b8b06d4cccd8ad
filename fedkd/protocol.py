"""The client/server message contract of federated distillation, in one place.

Every record key, message type and metric name that crosses the wire is defined here, so the
ClientApp (``fedkd.client_app``) and the server (``strategies``) cannot drift apart. Flower's
records are built and read by the helpers below; nothing else spells a key.

One round (see ``docs/algorithm.md``)::

    server --train-->  client   content: config (round, epochs, lr, T, codec, public-*),
                                         [public-indices], [teacher]   (co-distillation)
    server <--reply--  client   content: soft-labels (codec arrays), metrics, meta
    server --query-->  client   only when ``separate-query``: predictions without training

FedAvg baseline messages use Flower's own keys (``arrays``/``config``/``metrics``).

Cohorts (``clients-per-message`` = K > 1, simulation only): node ``n`` serves the virtual
clients ``n·K + s`` for slots ``s < K``. A request adds a ``cohort`` record naming the slots
sampled this round; the reply holds each slot's records under ``<key>@<slot>`` (or an
``error@<slot>``), which :func:`split_cohort_reply` turns back into one plain reply per slot.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch
    from flwr.app import Array, RecordDict

# ---------------------------------------------------------------- message types
TRAIN = "train"
QUERY = "query.soft_labels"  # a query with a named action, as Flower's Message API allows
EVALUATE = "evaluate"

# ---------------------------------------------------------------- record keys (content)
CONFIG = "config"  # ConfigRecord: round settings
PUBLIC_INDICES = "public-indices"  # ArrayRecord: {"idx": int32 (subset,)} when not the whole set
TEACHER = "teacher"  # ArrayRecord: {"probs": (subset, classes), "idx": (subset,)} co-distillation
SOFT_LABELS = "soft-labels"  # ArrayRecord: codec arrays, see fedkd.compression
SUPPORT = "support"  # ArrayRecord: {"scores": uint8 (subset,)} when the round asks (fedkd.support)
SUPPORT_SCORES = "scores"
METRICS = "metrics"  # MetricRecord
META = "meta"  # ConfigRecord: non-numeric reply metadata
ARRAYS = "arrays"  # FedAvg: model weights (Flower's default key); FedDF: a client's reply
GROUP_ARRAYS_PREFIX = "arrays."  # FedDF: "arrays.<model>", one architecture group's weights
# Cohorts (``clients-per-message`` > 1): one message serves several virtual clients of a node.
COHORT = "cohort"  # ConfigRecord in a request: {COHORT_SLOTS: list[int]} the slots to serve
COHORT_SLOTS = "slots"
MEMBER_SEPARATOR = "@"  # reply record "<key>@<slot>": that member's record (e.g. "meta@3")
MEMBER_ERROR = "error"  # ConfigRecord "error@<slot>": {ERROR_CODE, ERROR_REASON}: it failed
ERROR_CODE = "code"
ERROR_REASON = "reason"

# ---------------------------------------------------------------- config entries
ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
LR = "lr"
TEMPERATURE = "temperature"
CODEC = "codec"
TOPK = "topk"
PUBLIC_ALL = "public-all"  # bool: the whole public set, in its stored order
PUBLIC_SIZE = "public-size"  # int: total public-set size the server holds
PUBLIC_HASH = "public-hash"  # str: content hash of the public inputs (devices check theirs)
WITH_PREDICTIONS = "with-predictions"  # bool: train reply also carries soft labels
DISTILL_EPOCHS = "distill-epochs"  # client epochs toward the received teacher
WITH_SUPPORT = "with-support"  # bool: reply also carries per-row support scores

# ---------------------------------------------------------------- metric names (reply)
NUM_EXAMPLES = "num-examples"  # Flower's conventional weight key
CLASS_COUNTS = "class-counts"  # list[int] (classes,)
TRAIN_LOSS = "train-loss"
TEST_ACCURACY = "test-accuracy"  # client's local model on the shared test set
TEST_LOSS = "test-loss"
PARTITION_ID = "partition-id"
DP_EPSILON = "dp-epsilon"  # dp-mechanism=dpsgd: the client's ε so far (its own ledger)
DP_EPSILON_NEXT = "dp-epsilon-next"  # ... and the ε one more round would take it to
# Reported metrics that only mean something within a range; the server ignores (and logs) a
# value outside it rather than letting it into the round's averages.
METRIC_RANGES: dict[str, tuple[float, float]] = {TEST_ACCURACY: (0.0, 1.0)}

# ---------------------------------------------------------------- meta entries (reply)
MODEL_NAME = "model"
# What the reply answers, echoed from the request so the server can bind it to its round and
# public set (a stale, replayed or cross-round reply is rejected): the request's round, the
# message type it answered and the public-set hash it was computed on.
ECHO_ROUND = "echo-round"  # int
ECHO_TYPE = "echo-type"  # str: TRAIN or QUERY
ECHO_PUBLIC_HASH = "echo-public-hash"  # str

# ---------------------------------------------------------------- per-round metric names
ROUND_METRICS = (
    "round",
    "student_accuracy",
    "student_loss",
    "client_accuracy",
    "teacher_accuracy",
    "bytes_up",
    "bytes_down",
    "cum_bytes",
    "valid_replies",
    "rejected",
    "wall_seconds",
)


@dataclass(frozen=True)
class RoundRequest:
    """What the server asks of a client in one round (decoded from a train/query message)."""

    server_round: int
    local_epochs: int
    lr: float
    temperature: float
    codec: str
    topk: int
    public_indices: np.ndarray | None  # (subset,) int; None = the whole public set
    public_size: int
    public_hash: str
    with_predictions: bool
    distill_epochs: int
    teacher_probs: np.ndarray | None  # (subset, classes) co-distillation target
    teacher_indices: np.ndarray | None  # (subset,) public indices the teacher refers to
    with_support: bool = False  # also send support scores for the queried rows


@dataclass(frozen=True)
class Echo:
    """What a reply answers: echoed by the client, checked by the server (see ``ECHO_*``)."""

    server_round: int
    message_type: str
    public_hash: str


def public_hash(public_x: np.ndarray) -> str:
    """Content hash of the public inputs: devices prove they hold the same public set.

    Hashing the float32 bytes (shape included) is exact: any difference in preprocessing
    shows up, which is what we want before mixing soft labels from different devices.
    The array's own buffer is hashed in place (no ``tobytes()`` copy of the whole public set):
    same digest, half the memory traffic, and no transient copy the size of the set.
    """
    import hashlib

    arr = np.ascontiguousarray(public_x, dtype=np.float32)  # a no-op for float32 C-order
    digest = hashlib.sha256(str(arr.shape).encode())
    digest.update(arr.data)  # the array's own buffer (C-contiguous), no copy
    return digest.hexdigest()[:16]


Rows = TypeVar("Rows", "np.ndarray", "torch.Tensor")  # strings: no torch import at run time


def select_public(public_x: Rows, indices: np.ndarray | torch.Tensor | None) -> Rows:
    """The queried public rows, in the order the server asked for (NumPy or torch alike)."""
    return public_x if indices is None else public_x[indices]


def config_entries(mapping: Mapping[str, object]) -> dict[str, object]:
    """Plain dict copy of a ConfigRecord/MetricRecord (Flower records are mappings)."""
    return dict(mapping.items())


# ---------------------------------------------------------------- builders and parsers
def request_content(req: RoundRequest) -> RecordDict:
    """Encode a :class:`RoundRequest` as message content (server side)."""
    from flwr.app import ArrayRecord, ConfigRecord, RecordDict

    config = ConfigRecord(
        {
            ROUND: req.server_round,
            LOCAL_EPOCHS: req.local_epochs,
            LR: req.lr,
            TEMPERATURE: req.temperature,
            CODEC: req.codec,
            TOPK: req.topk,
            PUBLIC_ALL: req.public_indices is None,
            PUBLIC_SIZE: req.public_size,
            PUBLIC_HASH: req.public_hash,
            WITH_PREDICTIONS: req.with_predictions,
            DISTILL_EPOCHS: req.distill_epochs,
            WITH_SUPPORT: req.with_support,
        }
    )
    content = RecordDict({CONFIG: config})
    if req.public_indices is not None:
        idx = np.ascontiguousarray(req.public_indices, dtype=np.int32)
        content[PUBLIC_INDICES] = ArrayRecord({"idx": _array(idx)})
    if req.teacher_probs is not None and req.teacher_indices is not None:
        content[TEACHER] = ArrayRecord(
            {
                "probs": _array(np.ascontiguousarray(req.teacher_probs, dtype=np.float32)),
                "idx": _array(np.ascontiguousarray(req.teacher_indices, dtype=np.int32)),
            }
        )
    return content


def parse_request(content: RecordDict) -> RoundRequest:
    """Decode message content into a :class:`RoundRequest` (client side).

    Raises ``KeyError``/``ValueError`` with the missing key named when the server sent
    something this client does not understand.
    """
    cfg = content.config_records[CONFIG]

    def number(key: str) -> float:
        value = cfg[key]
        if not isinstance(value, int | float):  # bool is an int: accepted, as Flower sends it
            raise ValueError(f"request key {key!r}: expected a number, got {value!r}")
        return value

    indices = None
    if not bool(cfg[PUBLIC_ALL]):
        indices = content.array_records[PUBLIC_INDICES]["idx"].numpy().astype(np.int64)
    teacher_probs = teacher_idx = None
    if TEACHER in content.array_records:
        teacher = content.array_records[TEACHER]
        teacher_probs = teacher["probs"].numpy()
        teacher_idx = teacher["idx"].numpy().astype(np.int64)
    return RoundRequest(
        server_round=int(number(ROUND)),
        local_epochs=int(number(LOCAL_EPOCHS)),
        lr=float(number(LR)),
        temperature=float(number(TEMPERATURE)),
        codec=str(cfg[CODEC]),
        topk=int(number(TOPK)),
        public_indices=indices,
        public_size=int(number(PUBLIC_SIZE)),
        public_hash=str(cfg[PUBLIC_HASH]),
        with_predictions=bool(cfg[WITH_PREDICTIONS]),
        distill_epochs=int(number(DISTILL_EPOCHS)),
        teacher_probs=teacher_probs,
        teacher_indices=teacher_idx,
        with_support=bool(cfg.get(WITH_SUPPORT, False)),
    )


def group_arrays_key(model_name: str) -> str:
    """FedDF's record key for one architecture group's weights (``arrays.<model>``)."""
    return f"{GROUP_ARRAYS_PREFIX}{model_name}"


def carries_weights(content: RecordDict) -> bool:
    """A train request of a weight-sharing baseline (FedAvg, FedDF), not an FD round."""
    return any(k == ARRAYS or k.startswith(GROUP_ARRAYS_PREFIX) for k in content.array_records)


def reply_content(
    payload: Mapping[str, np.ndarray] | None,
    metrics: Mapping[str, int | float | list[int] | list[float]],
    *,
    model_name: str,
    codec: str,
    support: np.ndarray | None = None,
    echo: Echo | None = None,
) -> RecordDict:
    """Encode a client's reply: encoded soft labels (optional), support codes (optional),
    metrics and metadata.

    ``echo`` (the request's round, message type and public hash) goes into the meta record;
    the server rejects a reply whose echo does not match what it asked this round.
    """
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    meta = ConfigRecord({MODEL_NAME: model_name, CODEC: codec})
    if echo is not None:
        meta[ECHO_ROUND] = echo.server_round
        meta[ECHO_TYPE] = echo.message_type
        meta[ECHO_PUBLIC_HASH] = echo.public_hash
    content = RecordDict({METRICS: MetricRecord(dict(metrics)), META: meta})
    if payload is not None:
        content[SOFT_LABELS] = ArrayRecord({k: _array(v) for k, v in payload.items()})
    if support is not None:
        content[SUPPORT] = ArrayRecord({SUPPORT_SCORES: _array(support)})
    return content


def _array(arr: np.ndarray) -> Array:
    from flwr.app import Array

    return Array(np.ascontiguousarray(arr))


def array_values(array: Array) -> np.ndarray:
    """``array.numpy()``, without parsing the ``.npy`` header when it is the one ``np.save``
    writes for the array's declared dtype and shape (the server decodes every reply's arrays;
    ``np.load`` parses each header with ``ast.literal_eval``). Anything else, including a
    header that disagrees with the declared dtype or shape, goes through ``array.numpy()``
    unchanged, so a malformed array fails exactly as it did. A writable copy, like ``np.load``'s
    (and a view would keep the whole reply alive)."""
    data = array.data
    if array.stype == "numpy.ndarray" and isinstance(data, bytes):
        try:
            dtype = np.dtype(array.dtype)
            shape = tuple(int(n) for n in array.shape)
            head = _npy_header(dtype.str, shape) if not dtype.hasobject else b""
        except (TypeError, ValueError):
            head = b""
        size = dtype.itemsize * int(np.prod(shape, dtype=np.int64)) if head else -1
        if head and data.startswith(head) and len(data) - len(head) == size:
            values = np.frombuffer(data, dtype=dtype, offset=len(head))
            return values.reshape(shape).copy()  # writable and detached from the reply
    return array.numpy()


@functools.lru_cache(maxsize=256)
def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """The bytes ``np.save`` writes before a C-ordered array's data (format 1.0)."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)  # type: ignore[no-untyped-call]
    return buffer.getvalue()


def wire_nbytes(obj: object) -> int:
    """Serialized size of a Flower message/record tree: the bytes that cross the wire.

    Flower 1.41 ships messages as content-addressed objects (the message, its records, each
    array and its chunks); the sum of their deflated sizes is what a node up- or downloads,
    gRPC framing aside. The server counts every reply, so this is on its hot path: a
    ``RecordDict``'s or ``ArrayRecord``'s ``deflate()`` asks each child for its object id,
    which deflates (and hashes) the child again, so summing ``deflate()`` over the tree
    deflated every record twice (0.6-0.9 ms a reply). Here every object is deflated once: the
    two record containers (a header naming their distinct children's ids, then a JSON map of
    names to ids) are assembled from their children's ids as Flower assembles them
    (``flwr.supercore.inflatable``), everything else uses its own ``deflate()``.
    :func:`wire_nbytes_reference` is the plain sum; tests hold the two equal.
    """
    from flwr.app import ArrayRecord, RecordDict

    return _deflated(obj, (RecordDict, ArrayRecord))[0]


def wire_nbytes_reference(obj: object) -> int:
    """:func:`wire_nbytes` by summing each object's ``deflate()`` (the definition; slow)."""
    total = len(obj.deflate())  # type: ignore[attr-defined]
    for child in (obj.children or {}).values():  # type: ignore[attr-defined]
        total += wire_nbytes_reference(child)
    return total


def _deflated(obj: object, containers: tuple[type, ...]) -> tuple[int, str]:
    """(bytes of ``obj`` and its distinct children, recursively; ``obj``'s object id)."""
    if isinstance(obj, containers):
        sized = {name: _deflated(child, containers) for name, child in obj.items()}  # type: ignore[attr-defined]
        distinct = {oid: size for size, oid in sized.values()}  # like ``.children``
        body = json.dumps({name: oid for name, (_, oid) in sized.items()}).encode("utf-8")
        head = f"{type(obj).__qualname__} {','.join(distinct)} {len(body)}".encode()
        content = head + b"\x00" + body  # HEAD_VALUE_DIVIDER " ", HEAD_BODY_DIVIDER NUL
        return len(content) + sum(distinct.values()), hashlib.sha256(content).hexdigest()
    content = obj.deflate()  # type: ignore[attr-defined]
    children = (obj.children or {}).values()  # type: ignore[attr-defined]
    size = len(content) + sum(_deflated(c, containers)[0] for c in children)
    return size, hashlib.sha256(content).hexdigest()


# ---------------------------------------------------------------- cohorts
def cohort_request(base: RecordDict, slots: list[int]) -> RecordDict:
    """``base`` (a request's records, shared, not copied) plus the cohort's ``slots``."""
    from flwr.app import ConfigRecord, RecordDict

    content = RecordDict(dict(base.items()))
    content[COHORT] = ConfigRecord({COHORT_SLOTS: [int(s) for s in slots]})
    return content


def cohort_slots(content: RecordDict) -> list[int] | None:
    """The slots a request asks this node to serve, or ``None`` (a one-client message)."""
    record = content.config_records.get(COHORT)
    if record is None:
        return None
    slots = record[COHORT_SLOTS]
    if not isinstance(slots, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in slots
    ):
        raise ValueError(f"request key {COHORT!r}: slots must be non-negative ints, got {slots!r}")
    return [int(s) for s in slots]


def member_key(key: str, slot: int) -> str:
    """The record key of one member's ``key`` record in a cohort reply (``"meta@3"``)."""
    return f"{key}{MEMBER_SEPARATOR}{slot}"


def cohort_reply_content(parts: Mapping[int, RecordDict | tuple[int, str]]) -> RecordDict:
    """One reply for a cohort: each slot's reply records renamed ``<key>@<slot>`` (order kept),
    or, for a member that failed, ``error@<slot>`` holding its error code and reason."""
    from flwr.app import ConfigRecord, RecordDict

    content = RecordDict()
    for slot, part in parts.items():
        if isinstance(part, tuple):
            code, reason = part
            content[member_key(MEMBER_ERROR, slot)] = ConfigRecord(
                {ERROR_CODE: int(code), ERROR_REASON: str(reason)}
            )
            continue
        for key, record in part.items():
            content[member_key(key, slot)] = record
    return content


def split_cohort_reply(content: RecordDict) -> dict[int, RecordDict | tuple[int, str]]:
    """Undo :func:`cohort_reply_content`: per slot, its plain reply records (keys as a
    one-client reply has them, same order) or its ``(code, reason)`` error. Keys that do not
    name a member are ignored; the caller decides what a missing slot means."""
    from flwr.app import RecordDict

    parts: dict[int, RecordDict | tuple[int, str]] = {}
    for full_key, record in content.items():
        key, sep, slot_text = full_key.rpartition(MEMBER_SEPARATOR)
        if not sep or not slot_text.isdigit():
            continue
        slot = int(slot_text)
        if key == MEMBER_ERROR:
            code, reason = record.get(ERROR_CODE, 0), record.get(ERROR_REASON, "")
            parts[slot] = (int(code) if isinstance(code, int) else 0, str(reason))
            continue
        part = parts.setdefault(slot, RecordDict())
        if isinstance(part, RecordDict):  # an error for the slot wins over its records
            part[key] = record
    return parts


# ---------------------------------------------------------------- federated continual learning
# One stage of a federated continual run (strategies.fcl_app <-> fedkd.client_fcl):
#   server --train.fcl-->  client  config "fcl": job (FCLClientSpec JSON), stage, step,
#                                  [task-start, arrays] (fedavg) | [query, temperature] (fd)
#   server <--reply------  client  fedavg: arrays + metrics {num-examples, partition-id}
#                                  fd: "fcl-probs" {task-<j>: (P_j, k) float32} + metrics
#                                      {partition-id, rows-<j>, class-counts-<j>}
#   server --evaluate.fcl-> client config "fcl": job
#          <--reply------         metrics {partition-id, accuracy: [T floats]}
FCL_TRAIN = "train.fcl"
FCL_EVALUATE = "evaluate.fcl"
FCL_CONFIG = "fcl"  # ConfigRecord
FCL_JOB = "job"  # str: the FCLClientSpec as JSON
FCL_STAGE = "stage"  # int
FCL_STEP = "step"  # str: "fedavg" | "fd"
FCL_TASK_START = "task-start"  # bool: the stage's first FedAvg round (the LwF anchor)
FCL_QUERY = "query"  # str: "seen" | "current" (fedkd.continual.federated.stage_queries)
FCL_PROBS = "fcl-probs"  # ArrayRecord
FCL_ACCURACY = "accuracy"  # list[float]: one test accuracy per task


def fcl_task_key(task: int) -> str:
    """Array name of task ``task``'s predictions in :data:`FCL_PROBS`."""
    return f"task-{task}"


def fcl_rows_key(task: int) -> str:
    """Metric name of the client's training rows of task ``task``."""
    return f"rows-{task}"


def fcl_counts_key(task: int) -> str:
    """Metric name of the client's class counts of task ``task`` (list[int])."""
    return f"class-counts-{task}"

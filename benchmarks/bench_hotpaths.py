"""Hot paths, before and after, side by side: what each performance change buys.

    python -m benchmarks.bench_hotpaths                # every case, ~1 minute
    python -m benchmarks.bench_hotpaths --cases predict,hash --repeats 21
    python -m benchmarks.bench_hotpaths --quick

Each case times two or more implementations of one step in the same process, interleaved
(A, B, A, B, ...) ``--repeats`` times, and reports medians and the ratio to the first row. The
"before" rows are reference implementations kept here (the code as it was, or the naive form a
step is usually written in); the "after" rows call the library as it is now; "proposed" rows
prototype a change in a file this work did not own, to size it before anyone makes it.

Cases:

* ``predict``: soft predictions, per-sample Python loop vs 1024-row chunks (the old default)
  vs the device-sized default of :func:`fedkd.training.predict_logits` (256 rows on CPU).
* ``aggregate``: the mean teacher, a Python loop over clients and samples vs the vectorized
  rule in :mod:`strategies.aggregation`.
* ``hash``: the client's public-set hash each round, ``tobytes()`` copy (before) vs hashing the
  buffer in place (after) vs a per-process cache (proposed for ``fedkd.client``).
* ``restore``: what a ClientApp call spends rebuilding its client from ``Context.state``
  (model and optimizer built, state ``torch.load``-ed, then ``torch.save``-d) vs reusing the
  worker's model and loading tensors (proposed for ``fedkd.client_app``), beside the client's
  actual work in a round (train + evaluate + predict).
* ``threads``: two processes doing a client's work at once on this machine, torch with 1 vs
  2 intra-op threads each (oversubscription when cores = workers), and the server's student
  distillation alone with 1 thread vs all cores.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from benchmarks.common import add_common_args, markdown_table, median, write_json

Row = dict[str, Any]


def interleaved(funcs: Mapping[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed in rotation after one warm-up call each."""
    for f in funcs.values():
        f()
    seconds: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, f in funcs.items():
            started = time.perf_counter()
            f()
            seconds[name].append(time.perf_counter() - started)
    return {name: median(s) for name, s in seconds.items()}


def _rows(case: str, timed: dict[str, float], status: dict[str, str], note: str) -> list[Row]:
    first = next(iter(timed.values()))
    return [
        {
            "case": case,
            "variant": name,
            "status": status[name],
            "ms": 1000 * s,
            "ratio_to_first": s / first if first else float("nan"),
            "note": note,
        }
        for name, s in timed.items()
    ]


# ----------------------------------------------------------------------------- predict
def _per_sample(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The naive form: one forward per sample."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i : i + 1]) for i in range(len(x))])


def case_predict(repeats: int, quick: bool) -> list[Row]:
    """Digits CNN on the 539 public inputs, and a CIFAR-shaped CNN (random inputs)."""
    from fedkd.models import build_model
    from fedkd.training import predict_logits

    torch.set_num_threads(1)
    rows: list[Row] = []
    shapes = [((1, 8, 8), 539), ((3, 32, 32), 256 if quick else 1000)]
    for shape, n in shapes:
        torch.manual_seed(0)
        model, x = build_model("cnn", shape, 10), torch.randn(n, *shape)
        funcs = {
            "1024-row chunks (old default)": partial(predict_logits, model, x, batch_size=1024),
            "per-sample loop": partial(_per_sample, model, x),
            "device-sized chunks (new default)": partial(predict_logits, model, x),
        }
        status = dict(zip(funcs, ("before", "naive", "after"), strict=True))
        note = f"cnn, {n} x {shape}, 1 thread"
        rows += _rows("predict", interleaved(funcs, repeats), status, note)
    return rows


# ----------------------------------------------------------------------------- aggregate
def _mean_loop(probs: np.ndarray) -> np.ndarray:
    """The naive mean teacher: Python loops over samples and clients."""
    clients, samples, classes = probs.shape
    out = np.zeros((samples, classes))
    for s in range(samples):
        for k in range(clients):
            out[s] += probs[k, s]
        out[s] /= out[s].sum()
    return out.astype(np.float32)


def case_aggregate(repeats: int, quick: bool) -> list[Row]:
    """Mean rule on 10 clients x 539 public rows x 10 classes (digits-sized)."""
    from strategies.aggregation import AggregationContext, aggregate

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), size=(10, 539)).astype(np.float32)
    ctx = AggregationContext.uniform(10, 10)
    funcs = {
        "python loop": lambda: _mean_loop(probs),
        "vectorized rule": lambda: aggregate("mean", probs, ctx),
    }
    assert np.allclose(_mean_loop(probs), aggregate("mean", probs, ctx), atol=1e-6)
    timed = interleaved(funcs, max(3, repeats // 3))
    return _rows("aggregate", timed, {"python loop": "naive", "vectorized rule": "after"}, "")


# ----------------------------------------------------------------------------- hash
def _hash_copy(public_x: np.ndarray) -> str:
    """``fedkd.protocol.public_hash`` before this work: hashes a ``tobytes()`` copy."""
    arr = np.ascontiguousarray(public_x, dtype=np.float32)
    digest = hashlib.sha256(str(arr.shape).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()[:16]


def _cached_hash(x: np.ndarray, cache: dict[int, str]) -> str:
    """The proposal: hash the process's (immutable, loaded-once) public set once."""
    from fedkd.protocol import public_hash

    if id(x) not in cache:
        cache[id(x)] = public_hash(x)
    return cache[id(x)]


def case_hash(repeats: int, quick: bool) -> list[Row]:
    """Digits' public set (539 x 64 floats) and a CIFAR-sized one (random, 3x32x32)."""
    from fedkd.protocol import public_hash

    rows: list[Row] = []
    for n, shape in [(539, (1, 8, 8)), (1000 if quick else 5000, (3, 32, 32))]:
        x = np.random.default_rng(0).random((n, *shape), dtype=np.float32)
        assert _hash_copy(x) == public_hash(x)
        cache: dict[int, str] = {}
        funcs = {
            "tobytes copy": partial(_hash_copy, x),
            "buffer in place": partial(public_hash, x),
            "per-process cache": partial(_cached_hash, x, cache),
        }
        status = dict(zip(funcs, ("before", "after", "proposed"), strict=True))
        note = f"{n} x {shape} float32 ({x.nbytes / 2**20:.1f} MiB)"
        rows += _rows("hash", interleaved(funcs, repeats), status, note)
    return rows


# ----------------------------------------------------------------------------- restore
def _request(client: Any, cfg: Any) -> Any:
    """The round-1 train request a client gets (whole public set, codec ``none``)."""
    from fedkd import protocol as P

    return P.RoundRequest(
        server_round=1,
        local_epochs=cfg.local_epochs,
        lr=cfg.lr,
        temperature=cfg.temperature,
        codec="none",
        topk=3,
        public_indices=None,
        public_size=len(client.data.public_x),
        public_hash=P.public_hash(client.data.public_x.numpy()),
        with_predictions=True,
        distill_epochs=0,
        teacher_probs=None,
        teacher_indices=None,
    )


def _client(pid: int = 0) -> Any:
    from fedkd.client import FDClient, load_client_data
    from fedkd.config import FDConfig

    cfg = FDConfig(client_models="cnn", num_clients=100, partition="iid", min_train_nodes=2)
    return FDClient(cfg, load_client_data(cfg, pid, 100), "cnn", pid), cfg


def case_restore(repeats: int, quick: bool) -> list[Row]:
    """Per-message client rebuild vs reuse, next to the work of one client round."""
    from fedkd.client import FDClient

    torch.set_num_threads(1)
    client, cfg = _client()
    req = _request(client, cfg)
    client.run_round(req, train=True)  # momentum buffers exist: the state has its full size
    blob = client.state_bytes()
    state = copy.deepcopy(
        {"model": client.model.state_dict(), "optim": client.optimizer.state_dict()}
    )

    def rebuild() -> None:  # what fedkd.client_app does on every message
        c = FDClient(cfg, client.data, "cnn", 0)
        c.load_state_bytes(blob)
        c.state_bytes()

    def reuse() -> None:  # keep the worker's client; state as tensors, no (de)serialisation
        client.model.load_state_dict(state["model"])
        client.optimizer.load_state_dict(state["optim"])

    funcs = {
        "client round (train+eval+predict)": lambda: client.run_round(req, train=True),
        "rebuild + torch.load + torch.save": rebuild,
        "reuse worker's model": reuse,
    }
    status = dict(zip(funcs, ("work", "current", "proposed"), strict=True))
    note = "digits CNN, 1 of 100 IID clients, 1 thread; ratios are to the round's work"
    return _rows("restore", interleaved(funcs, repeats), status, note)


# ----------------------------------------------------------------------------- threads
def _client_work(threads: int, rounds: int, barrier: Any, results: Any) -> None:
    """Child: set up a client, wait for the sibling, time ``rounds`` client rounds."""
    client, cfg = _client(os.getpid() % 100)
    torch.set_num_threads(threads)  # FDClient sets cfg.torch_threads; override after
    req = _request(client, cfg)
    client.run_round(req, train=True)  # warm-up
    barrier.wait()  # both children start the timed part together
    started = time.perf_counter()
    for _ in range(rounds):
        client.run_round(req, train=True)
    results.put(time.perf_counter() - started)


def _two_workers(threads: int, rounds: int) -> float:
    """Seconds until both of two concurrent processes finish the same client work (start-up
    and imports excluded: the children wait at a barrier before the timed part)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_client_work, args=(threads, rounds, barrier, results)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    seconds = max(results.get() for _ in procs)
    for p in procs:
        p.join()
    return seconds


def distill_child(threads: int, repeats: int) -> dict[str, float]:
    """Median seconds of the server's student distillation with ``threads`` torch threads,
    after one warm-up (meant for a fresh process: torch keeps one thread pool per process)."""
    from fedkd.client import load_splits_for
    from fedkd.config import FDConfig
    from fedkd.kd import KDSpec
    from fedkd.models import build_model
    from fedkd.training import TrainConfig, distill

    torch.set_num_threads(threads)
    splits = load_splits_for(FDConfig())
    teacher = torch.softmax(torch.randn(len(splits.public_x), splits.num_classes), dim=1)
    seconds = []
    for _ in range(repeats + 1):
        torch.manual_seed(0)
        student = build_model("cnn", splits.input_shape, splits.num_classes)
        started = time.perf_counter()
        distill(student, splits.public_x, teacher, KDSpec(2.0), TrainConfig(epochs=5))
        seconds.append(time.perf_counter() - started)
    return {"seconds": median(seconds[1:])}


def case_threads(repeats: int, quick: bool) -> list[Row]:
    """Oversubscription of concurrent workers, and the server phase when workers are idle.

    Every measurement runs in fresh processes: switching torch's thread count back and forth
    inside one process re-creates its thread pool and would be measured instead.
    """
    from benchmarks.common import run_isolated

    rounds = 5 if quick else 20
    reps = max(1, repeats // 4)
    workers: dict[str, list[float]] = {"2 workers x 1 thread(s)": [], "2 workers x 2 thread(s)": []}
    for _ in range(reps):
        for t in (1, 2):
            workers[f"2 workers x {t} thread(s)"].append(_two_workers(t, rounds))
    rows = _rows(
        "threads",
        {k: median(v) for k, v in workers.items()},
        {"2 workers x 1 thread(s)": "default", "2 workers x 2 thread(s)": "oversubscribed"},
        f"{os.cpu_count()} cores, {rounds} digits-CNN client rounds per worker",
    )
    cores = os.cpu_count() or 1
    names = {1: "student distil, 1 thread", cores: f"student distil, {cores} threads"}
    distil: dict[str, list[float]] = {name: [] for name in names.values()}
    for _ in range(reps):
        for t, name in names.items():
            out = run_isolated("benchmarks.bench_hotpaths:distill_child", threads=t, repeats=3)
            distil[name].append(out["seconds"])
    status = dict(zip(distil, ("current", "proposed"), strict=True))
    timed = {k: median(v) for k, v in distil.items()}
    return rows + _rows("threads", timed, status, "digits CNN student, 539 rows, 5 epochs")


CASES: dict[str, Callable[[int, bool], list[Row]]] = {
    "predict": case_predict,
    "aggregate": case_aggregate,
    "hash": case_hash,
    "restore": case_restore,
    "threads": case_threads,
}


def markdown(rows: list[Row]) -> str:
    """One row per (case, variant): status, median ms, ratio to the case's first row."""
    table = [
        [
            r["case"],
            r["variant"],
            r["status"],
            f"{r['ms']:.2f}",
            f"{r['ratio_to_first']:.2f}×",
            r["note"],
        ]
        for r in rows
    ]
    return markdown_table(["case", "variant", "status", "median ms", "vs first", "setting"], table)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"subset of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repeats per case")
    add_common_args(parser, "bench_hotpaths")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the cases, print the table, write the JSON."""
    args = parse_args(argv)
    if args.quick:
        args.repeats = 3
    rows: list[Row] = []
    for name in args.cases.split(","):
        print(f"--- {name}", flush=True)
        rows += CASES[name](args.repeats, args.quick)
    table = markdown(rows)
    print("\n" + table)
    payload = {"setting": vars(args), "table": table, "rows": rows}
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()

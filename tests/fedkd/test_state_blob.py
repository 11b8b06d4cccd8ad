"""Client state blobs: raw tensors behind a JSON header, read back exactly, no pickle."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from fedkd import state_blob


def _state() -> dict:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()  # Adam state: int-keyed dict of tensors, param groups with floats/bools
    return {
        "model": model.state_dict(),
        "optim": optimizer.state_dict(),
        "dp_events": torch.tensor([[1.0, 0.5, 2.0]], dtype=torch.float64),
        "empty": torch.zeros(0, 3),
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))  # type: ignore[arg-type]
    return type(a) is type(b) and a == b


def test_round_trip_is_exact_and_keeps_key_types() -> None:
    state = _state()
    blob = state_blob.dumps(state)
    assert blob.startswith(state_blob.MAGIC) and b"\x80" not in blob[:2]  # not a pickle
    loaded = state_blob.loads(blob)
    assert _same(state, loaded)
    assert all(isinstance(k, int) for k in loaded["optim"]["state"])
    model = torch.nn.Linear(4, 3)
    model.load_state_dict(loaded["model"])  # usable as it is


def test_blobs_from_torch_save_still_load_and_bfloat16_falls_back() -> None:
    state = _state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert _same(state, state_blob.loads(buffer.getvalue()))
    odd = {"w": torch.ones(2, dtype=torch.bfloat16)}
    blob = state_blob.dumps(odd)
    assert not blob.startswith(state_blob.MAGIC)
    assert _same(odd, state_blob.loads(blob))


def test_loading_a_state_into_an_older_object_equals_a_fresh_build() -> None:
    """What ``client_app._restore`` relies on when it reuses this process's stale client."""
    from fedkd import protocol as P
    from fedkd.client import FDClient, load_client_data
    from fedkd.config import FDConfig

    cfg = FDConfig(
        dataset="synthetic",
        synthetic_samples=600,
        num_clients=4,
        partition="iid",
        client_models="mlp",
        local_epochs=1,
    )

    def client() -> FDClient:
        return FDClient(cfg, load_client_data(cfg, 1, 4), "mlp", 1)

    def request(server_round: int) -> P.RoundRequest:
        data = load_client_data(cfg, 1, 4)
        return P.RoundRequest(
            server_round, 1, 0.1, 2.0, "none", 3, None, len(data.public_x),
            data.public_digest, True, 0, None, None,
        )  # fmt: skip

    saved, stale = client(), client()
    saved.run_round(request(1), train=True)
    stale.run_round(request(1), train=True)
    stale.run_round(request(2), train=True)  # an older object that has moved on
    blob = saved.state_bytes()
    fresh = client()
    fresh.load_state_bytes(blob)
    stale.load_state_bytes(blob)
    a = fresh.run_round(request(2), train=True)
    b = stale.run_round(request(2), train=True)
    assert a.metrics == b.metrics
    assert all(
        torch.equal(torch.as_tensor(a.payload[k]), torch.as_tensor(b.payload[k])) for k in a.payload
    )  # type: ignore[index,union-attr]
    assert fresh.state_bytes() == stale.state_bytes()


def _trained(optimizer_name: str, steps: int, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    optimizer: torch.optim.Optimizer = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if optimizer_name == "sgd"
        else torch.optim.Adam(model.parameters(), lr=0.01)
    )
    for _ in range(steps):
        _step(model, optimizer)
    return model, optimizer


def _step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    optimizer.zero_grad()
    model(torch.randn(8, 5)).pow(2).mean().backward()
    optimizer.step()


def _forbidden(*args: object, **kwargs: object) -> None:
    raise AssertionError("the fast path fell back to load_state_dict")


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
@pytest.mark.parametrize("target_steps", [0, 2])  # restoring into a fresh or a trained object
def test_fast_restore_equals_load_state_dict_step_for_step(
    optimizer_name: str, target_steps: int
) -> None:
    """restore_module/restore_optimizer leave a model and optimizer that train exactly as
    load_state_dict's do (same state_dict, same parameters after two more steps)."""
    source, source_opt = _trained(optimizer_name, 3, seed=0)
    blob = state_blob.dumps({"model": source.state_dict(), "optim": source_opt.state_dict()})
    outcomes = []
    for fast in (True, False):
        model, optimizer = _trained(optimizer_name, target_steps, seed=1)
        state = state_blob.loads(blob)
        if fast:  # the fast path must be the one taken here: load_state_dict is off limits
            model.load_state_dict = optimizer.load_state_dict = _forbidden  # type: ignore[method-assign]
            state_blob.restore_module(model, state["model"])
            state_blob.restore_optimizer(optimizer, state["optim"])
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optim"])
        restored = optimizer.state_dict()
        torch.manual_seed(7)
        _step(model, optimizer)
        _step(model, optimizer)
        outcomes.append((restored, [p.detach().clone() for p in model.parameters()]))
    (fast_state, fast_params), (slow_state, slow_params) = outcomes
    assert fast_state["param_groups"] == slow_state["param_groups"]
    assert fast_state["state"].keys() == slow_state["state"].keys()
    for index, entries in slow_state["state"].items():
        assert fast_state["state"][index].keys() == entries.keys()
        for key, value in entries.items():
            assert torch.equal(fast_state["state"][index][key], value), (index, key)
    for fast_p, slow_p in zip(fast_params, slow_params, strict=True):
        assert torch.equal(fast_p, slow_p)


def test_fast_restore_falls_back_on_anything_unusual() -> None:
    """Another architecture or optimizer layout is load_state_dict's to refuse, as before."""
    model, optimizer = _trained("sgd", 1, seed=0)
    saved = state_blob.loads(
        state_blob.dumps({"model": model.state_dict(), "optim": optimizer.state_dict()})
    )
    wider = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3))
    with pytest.raises(RuntimeError, match="size mismatch"):
        state_blob.restore_module(wider, saved["model"])
    fewer = torch.optim.SGD(list(model.parameters())[:2], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter group"):
        state_blob.restore_optimizer(fewer, saved["optim"])

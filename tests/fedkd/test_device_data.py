"""Tests for a device's own data: the .npz format, its validation, and the public-set check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from fedkd import protocol as P
from fedkd.client import FDClient, load_client_data, load_splits_for
from fedkd.client_app import _restore
from fedkd.config import FDConfig, to_run_config
from fedkd.device_data import (
    DATA_PATH_KEY,
    DeviceDataError,
    load_device_data,
    read_private_npz,
    write_partitions,
    write_private_npz,
)
from tests.helpers import round_request

CFG = FDConfig(num_clients=2, local_epochs=1)
SHAPE, CLASSES = (1, 8, 8), 10


def _good(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, *SHAPE), dtype=np.float32), rng.integers(0, CLASSES, n)


def test_no_data_path_means_simulated_partition() -> None:
    assert load_device_data(CFG, {"partition-id": 0}) is None
    assert load_device_data(CFG, {DATA_PATH_KEY: ""}) is None


def test_partitions_written_equal_the_simulators(tmp_path: Path) -> None:
    paths = write_partitions(CFG, 2, tmp_path)
    assert [p.name for p in paths] == ["partition-0.npz", "partition-1.npz"]
    for i, path in enumerate(paths):
        device = load_device_data(CFG, {DATA_PATH_KEY: str(path)})
        simulated = load_client_data(CFG, i, 2)
        assert device is not None
        assert torch.equal(device.train_x, simulated.train_x)
        assert torch.equal(device.train_y, simulated.train_y)
        assert device.train_x.dtype == torch.float32 and device.train_y.dtype == torch.int64


def test_device_public_set_matches_the_servers_hash(tmp_path: Path) -> None:
    x, y = _good()
    data = load_device_data(CFG, {DATA_PATH_KEY: str(write_private_npz(tmp_path / "d.npz", x, y))})
    assert data is not None
    server_public = load_splits_for(CFG).public_x  # what strategies.server_app hands FedDistill
    client = FDClient(CFG, data, "mlp", 0)
    client.check_public(round_request(server_public))
    with pytest.raises(ValueError, match="public set mismatch"):
        client.check_public(round_request(server_public, public_hash="0" * 16))


def test_clientapp_uses_data_path_from_node_config(tmp_path: Path) -> None:
    x, y = _good(9)
    path = write_private_npz(tmp_path / "mine.npz", x, y)
    node_config = {DATA_PATH_KEY: str(path), "partition-id": 1}
    context = Context(1, 7, node_config, RecordDict(), to_run_config(CFG))
    client = _restore(context, CFG)
    assert torch.equal(client.data.train_x, torch.from_numpy(x))
    assert client.data.class_counts == np.bincount(y, minlength=CLASSES).tolist()


def test_other_widths_are_converted(tmp_path: Path) -> None:
    x, y = _good()
    path = tmp_path / "wide.npz"
    np.savez(path, x=x.astype(np.float64), y=y.astype(np.uint8))
    tx, ty = read_private_npz(path, SHAPE, CLASSES)
    assert tx.dtype == torch.float32 and ty.dtype == torch.int64
    assert torch.equal(ty, torch.from_numpy(y.astype(np.int64)))


def _bad_files(tmp: Path) -> list[tuple[Path, str]]:
    x, y = _good()
    cases: list[tuple[Path, str]] = [
        (tmp / "absent.npz", "does not exist"),
        (tmp, "is a directory"),
    ]
    (tmp / "text.npz").write_text("not an archive")
    cases.append((tmp / "text.npz", "not a readable NumPy .npz"))
    np.save(tmp / "single.npy", x)
    cases.append((tmp / "single.npy", "single .npy"))
    arrays = {
        "nokey": ({"x": x}, "missing array"),
        "intx": ({"x": (x * 16).astype(np.int64), "y": y}, "dtype int64"),
        "floaty": ({"x": x, "y": y.astype(np.float32)}, "class ids"),
        "flat": ({"x": x.reshape(len(x), -1), "y": y}, "x.reshape"),
        "range": ({"x": x, "y": y + CLASSES}, "classes 0..9"),
        "nan": ({"x": np.where(x > 0.5, np.nan, x), "y": y}, "NaN"),
        "rows": ({"x": x, "y": y[:-1]}, "rows"),
        "empty": ({"x": x[:0], "y": y[:0]}, "no examples"),
        "y2d": ({"x": x, "y": y[:, None]}, "expected (N,)"),
    }
    for name, (content, message) in arrays.items():
        np.savez(tmp / f"{name}.npz", **content)
        cases.append((tmp / f"{name}.npz", message))
    return cases


def test_bad_files_fail_naming_the_file_and_the_problem(tmp_path: Path) -> None:
    for path, message in _bad_files(tmp_path):
        with pytest.raises(DeviceDataError) as err:
            read_private_npz(path, SHAPE, CLASSES)
        assert str(path.resolve()) in str(err.value), path
        assert message in str(err.value), (path, str(err.value))


def test_pickled_or_corrupt_files_never_advise_allow_pickle(tmp_path: Path) -> None:
    import pickle

    x, y = _good()
    np.savez(tmp_path / "objects.npz", x=np.array([x, "text"], dtype=object), y=y)
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"x": x, "y": y}))
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04" + bytes(200))
    for name in ("objects", "pickle", "garbage"):
        with pytest.raises(DeviceDataError) as err:
            read_private_npz(tmp_path / f"{name}.npz", SHAPE, CLASSES)
        message = str(err.value)
        assert "allow_pickle" not in message, message
        assert err.value.__cause__ is None and err.value.__suppress_context__
        assert "np.savez" in message, message
    with pytest.raises(DeviceDataError, match="pickled Python objects"):
        read_private_npz(tmp_path / "objects.npz", SHAPE, CLASSES)


def test_badly_scaled_data_is_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x, y = _good()
    path = write_private_npz(tmp_path / "raw.npz", x * 16.0, y)  # raw 0..16 pixels, unscaled
    load_device_data(CFG, {DATA_PATH_KEY: str(path)})
    assert "scale the private data" in caplog.text


def test_public_set_costs_a_hash_not_its_bytes() -> None:
    """Shipped-and-checked: the request carries hash and size, never the public inputs."""
    public = load_splits_for(CFG).public_x.numpy()  # (public, 1, 8, 8) float32
    req = round_request(public)
    with_check = P.wire_nbytes(P.request_content(req))
    assert with_check < public.nbytes / 50  # the inputs themselves would be ~138 kB

"""A real device's data: its private examples from a local file, the rest from the package.

In simulation a client's data is partition ``partition-id`` of the run's dataset. On a device
(a Flower SuperNode) the private data is the device's own, and never leaves it: the SuperNode
names a local file in its node config, ``--node-config "data-path='/data/fedkd/train.npz'"``,
and :func:`load_device_data` reads it. The file format (written by ``np.savez``)::

    x : float32 (N, *input_shape)   same shape and scale as the run's dataset
                                    (digits: (N, 1, 8, 8), pixel values in [0, 1])
    y : int64   (N,)                class ids in [0, num_classes)

Other float / integer widths are converted; anything else is refused with an error that names
the file and the problem, before any training starts.

The public unlabelled set and the shared test set come from the run's dataset, which ships
with the package (``digits`` is inside scikit-learn), so the public inputs are *shipped to the
device and checked by hash*: the server sends ``public-hash`` and ``public-size`` with every
request (a few dozen bytes) and :meth:`fedkd.client.FDClient.check_public` refuses to answer on
a public set that differs. The public inputs themselves never cross the wire (see
``docs/deploy.md`` for the byte count).

:func:`write_partitions` writes simulation-identical partitions as ``.npz`` files, so a demo
federation of devices can be checked against the simulator.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedkd.client import ClientData, client_partitions, load_splits_for
from fedkd.config import FDConfig

log = logging.getLogger(__name__)

DATA_PATH_KEY = "data-path"  # node-config key: a local .npz with this device's private data
X_KEY, Y_KEY = "x", "y"  # array names inside the .npz


class DeviceDataError(ValueError):
    """A device's data file is missing or malformed; the message names the file and the fix."""


def load_device_data(cfg: FDConfig, node_config: Mapping[str, Any]) -> ClientData | None:
    """This device's :class:`~fedkd.client.ClientData`, or None when the node has no data file.

    Parameters
    ----------
    cfg : FDConfig
        The run's configuration; its dataset supplies the public and the test set (and the
        input shape and class count the private data must match).
    node_config : Mapping
        The SuperNode's node config. ``data-path`` (a local ``.npz``, format in the module
        docstring) switches from the simulated partition to the device's own data.

    Raises
    ------
    DeviceDataError
        If the file is missing, not an ``.npz``, or its arrays do not fit the run's dataset.
    """
    raw = node_config.get(DATA_PATH_KEY)
    if raw is None or str(raw) == "":
        return None
    splits = load_splits_for(cfg)
    x, y = read_private_npz(str(raw), splits.input_shape, splits.num_classes)
    _warn_on_scale(Path(str(raw)), x, splits.public_x)
    return ClientData(
        train_x=x,
        train_y=y,
        public_x=splits.public_x,
        test_x=splits.test_x,
        test_y=splits.test_y,
        num_classes=splits.num_classes,
        input_shape=splits.input_shape,
    )


def read_private_npz(
    path: str | Path, input_shape: tuple[int, ...], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read and validate a private-data ``.npz``: ``x`` (N, *input_shape), ``y`` (N,).

    Every check raises :class:`DeviceDataError` naming the file, so a mistake on one device is
    found from its own log, not from a mysteriously bad teacher on the server.
    """
    file = Path(path).expanduser().resolve()
    arrays = _open_npz(file)
    x = _as_inputs(file, arrays[X_KEY], input_shape)  # (N, *input_shape)
    y = _as_labels(file, arrays[Y_KEY], num_classes)  # (N,)
    if len(x) != len(y):
        raise DeviceDataError(f"{file}: '{X_KEY}' has {len(x)} rows but '{Y_KEY}' has {len(y)}")
    if len(x) == 0:
        raise DeviceDataError(f"{file}: no examples (N = 0)")
    return torch.from_numpy(x), torch.from_numpy(y)


def _open_npz(file: Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        what = "is a directory" if file.is_dir() else "does not exist"
        raise DeviceDataError(
            f"{file} {what}: node config '{DATA_PATH_KEY}' must name an .npz file "
            f"with arrays '{X_KEY}' and '{Y_KEY}'"
        )
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise _unreadable(file, err) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DeviceDataError(
            f"{file}: a single .npy array; save with np.savez(path, x=..., y=...)"
        )
    with loaded:
        missing = [k for k in (X_KEY, Y_KEY) if k not in loaded.files]
        if missing:
            raise DeviceDataError(
                f"{file}: missing array(s) {', '.join(missing)}; "
                f"found {', '.join(loaded.files) or 'none'}"
            )
        try:
            return {k: loaded[k] for k in (X_KEY, Y_KEY)}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise _unreadable(file, err) from None


def _unreadable(file: Path, err: Exception) -> DeviceDataError:
    """A clear error for a corrupt file or one holding Python objects.

    NumPy's own messages here advise ``allow_pickle=True``, which would run code from an
    untrusted file: they are never passed on (nor chained, so they do not reach the log).
    """
    if "Object arrays" in str(err):  # an .npz member that is a pickled object array
        return DeviceDataError(
            f"{file}: holds pickled Python objects, which fedkd never loads (unpickling runs code "
            f"from the file); save plain numeric arrays with np.savez(path, "
            f"{X_KEY}=float_array, {Y_KEY}=int_array)"
        )
    return DeviceDataError(
        f"{file}: not a readable NumPy .npz archive (corrupt, truncated or another format; fedkd "
        f"never unpickles files); save it with np.savez(path, {X_KEY}=..., {Y_KEY}=...)"
    )


def _as_inputs(file: Path, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.floating):
        raise DeviceDataError(
            f"{file}: '{X_KEY}' has dtype {x.dtype}; expected float32 scaled like the run's "
            "dataset (e.g. x.astype(np.float32) / 16 for raw 8x8 digits)"
        )
    if x.ndim < 1 or tuple(x.shape[1:]) != tuple(input_shape):
        dims = ", ".join(map(str, input_shape))
        hint = ""
        if x.ndim >= 1 and int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
            hint = f"; reshape with x.reshape(-1, {dims})"
        raise DeviceDataError(f"{file}: '{X_KEY}' has shape {x.shape}; expected (N, {dims}){hint}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DeviceDataError(f"{file}: '{X_KEY}' contains NaN or infinite values")
    return x


def _as_labels(file: Path, y: np.ndarray, num_classes: int) -> np.ndarray:
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DeviceDataError(
            f"{file}: '{Y_KEY}' has dtype {y.dtype}; expected int64 class ids (y.astype(np.int64))"
        )
    if y.ndim != 1:
        raise DeviceDataError(f"{file}: '{Y_KEY}' has shape {y.shape}; expected (N,) class ids")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DeviceDataError(
            f"{file}: '{Y_KEY}' holds labels in [{int(y.min())}, {int(y.max())}]; "
            f"the run's dataset has classes 0..{num_classes - 1}"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


def _warn_on_scale(file: Path, x: torch.Tensor, public_x: torch.Tensor) -> None:
    """Differently scaled private data trains a model whose public-set predictions are noise."""
    lo, hi = float(public_x.min()), float(public_x.max())
    margin = max(hi - lo, 1e-6)
    if float(x.min()) < lo - margin or float(x.max()) > hi + margin:
        log.warning(
            "%s: values span [%.3g, %.3g] but the public set spans [%.3g, %.3g]; "
            "scale the private data like the run's dataset",
            file,
            float(x.min()),
            float(x.max()),
            lo,
            hi,
        )


def write_private_npz(path: str | Path, x: np.ndarray, y: np.ndarray) -> Path:
    """Write one device's data in the format :func:`read_private_npz` reads."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    x32, y64 = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
    with file.open("wb") as handle:  # a handle: np.savez would append ".npz" to other names
        np.savez(handle, x=x32, y=y64)  # names: X_KEY, Y_KEY
    return file


def write_partitions(cfg: FDConfig, num_partitions: int, out_dir: str | Path) -> list[Path]:
    """Write the simulator's partitions of ``cfg``'s private pool as ``partition-<i>.npz``.

    The split uses the same seed, scheme and public fraction as the simulation, so device
    ``i`` given ``data-path=<out_dir>/partition-<i>.npz`` trains on exactly what simulated
    client ``i`` would. The public and test pools are not written: devices take them from the
    package, which is what keeps the public set's hash equal everywhere.
    """
    splits = load_splits_for(cfg)
    parts = client_partitions(cfg, num_partitions)  # list of (n_i,) index arrays into train_x
    out = Path(out_dir)
    return [
        write_private_npz(
            out / f"partition-{i}.npz", splits.train_x[idx].numpy(), splits.train_y[idx].numpy()
        )
        for i, idx in enumerate(parts)
    ]

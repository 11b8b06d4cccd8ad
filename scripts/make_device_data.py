"""Write demo device data: the simulator's partitions of the embedded dataset as .npz files.

Each file is one device's private data in the format ``fedkd.device_data`` reads (``x``
float32 (N, *input_shape), ``y`` int64 (N,)); point a SuperNode at it with
``--node-config "data-path='<out-dir>/partition-0.npz' partition-id=0"``. The run-config
given here must match the one the federation runs with (seed, dataset, public-fraction,
partition), or the devices' private data would overlap the public set.

Usage::

    python scripts/make_device_data.py --out-dir device-data --num-partitions 2
    python scripts/make_device_data.py --out-dir device-data --num-partitions 4 \
        --run-config "partition='iid' seed=1"
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

import numpy as np

from fedkd.client import load_splits_for
from fedkd.config import FDConfig, check_unknown_keys, from_run_config
from fedkd.device_data import write_partitions
from fedkd.protocol import public_hash


def parse_run_config(text: str) -> dict[str, object]:
    """``key=value`` pairs as ``flwr run --run-config`` takes them (values are TOML)."""
    pairs = re.findall(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)", text)
    return tomllib.loads("\n".join(f"{k} = {v}" for k, v in pairs))


def main(argv: list[str] | None = None) -> int:
    """Write ``partition-<i>.npz`` files and print what each holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--num-partitions", type=int, default=None, help="default: num-clients")
    parser.add_argument("--run-config", default="", help="overrides, as for `flwr run`")
    args = parser.parse_args(argv)
    overrides = parse_run_config(args.run_config)
    check_unknown_keys(overrides)
    cfg = from_run_config(overrides) if overrides else FDConfig()
    num = args.num_partitions or cfg.num_clients
    paths = write_partitions(cfg, num, args.out_dir)
    splits = load_splits_for(cfg)
    for path in paths:
        with np.load(path) as arrays:
            counts = np.bincount(arrays["y"], minlength=splits.num_classes).tolist()
            print(f"{path}  N={len(arrays['y'])}  x{arrays['x'].shape[1:]}  classes {counts}")
    digest = public_hash(splits.public_x.numpy())
    print(
        f"public set (ships with the package, never sent): n={len(splits.public_x)} hash={digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

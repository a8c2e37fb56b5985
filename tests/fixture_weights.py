"""Deterministic fixture weights: a state dict that is a pure function of a key -> shape listing.

Per key, rs = numpy RandomState(crc32(salt + key) & 0x7fffffff), values drawn in float64, cast to float32:
num_batches_tracked -> int64 zeros; running_var -> uniform(0.5, 1.5); running_mean -> 0.1 * N(0, 1);
keys in spec["fixed"] -> the stored values; 0-d/1-d weight|gamma|g -> 1 + 0.1 * N(0, 1);
other 0-d/1-d -> 0.1 * N(0, 1); 2+-d -> N(0, 1) / sqrt(prod(shape[1:])).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch


def fixture_array(key: str, shape: list[int] | tuple[int, ...], salt: str = "") -> np.ndarray:
    """One fixture tensor for `key` of `shape` under `salt`."""
    shape = tuple(int(s) for s in shape)
    rs = np.random.RandomState(zlib.crc32((salt + key).encode()) & 0x7FFFFFFF)
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if name == "running_var":
        values = rs.uniform(0.5, 1.5, shape)
    elif name == "running_mean":
        values = 0.1 * rs.standard_normal(shape)
    elif len(shape) <= 1:
        values = (1.0 if name in ("weight", "gamma", "g") else 0.0) + 0.1 * rs.standard_normal(shape)
    else:
        values = rs.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
    return values.astype(np.float32)


def fixture_state_dict(spec: dict, salt: str = "") -> dict[str, torch.Tensor]:
    """spec {"shapes": {key: dims}, "fixed": {key: values}} -> {key: tensor}, in the spec's key order."""
    fixed = spec.get("fixed", {})
    out = {}
    for key, shape in spec["shapes"].items():
        if key in fixed:
            out[key] = torch.tensor(np.asarray(fixed[key], np.float32).reshape(shape))
        else:
            out[key] = torch.from_numpy(fixture_array(key, shape, salt))
    return out

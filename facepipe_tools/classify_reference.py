"""An independent numpy forward pass of EfficientNet-Lite0, to check the ONNX model against.

It shares nothing with ``facepipe.classify.convert`` but the state dict reader: BatchNorm runs
un-folded with its running statistics, the TensorFlow "SAME" padding is computed from each
input's actual size, the stage layout is written out from the EfficientNet-B0 table, and
everything is computed in float64. Slow (a second or so per image) and meant for tests only.
"""

from __future__ import annotations

import numpy as np

BN_EPSILON = 1e-3

# EfficientNet-B0 stage table (Tan & Le 2019, table 1), kept by Lite0: per stage, the number of
# MBConv blocks and the stride of its first block.
STAGES = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1))


def _tf_same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Zero-pad the H and W axes of NCHW ``x`` as TensorFlow's padding="SAME" does."""
    widths = [(0, 0), (0, 0)]
    for size in x.shape[2:]:
        out = (size + stride - 1) // stride
        need = max(0, (out - 1) * stride + kernel - size)
        widths.append((need // 2, need - need // 2))
    return np.pad(x, widths)


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Padded sliding windows of NCHW ``x``: [N, C, outH, outW, k, k]."""
    padded = _tf_same_pad(x, kernel, stride)
    view = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(2, 3))
    return view[:, :, ::stride, ::stride]


def conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """Dense convolution, no bias; ``weight`` is [out, in, k, k] (OIHW)."""
    return np.einsum("nchwij,ocij->nohw", _windows(x, weight.shape[2], stride), weight, optimize=True)


def depthwise_conv(x: np.ndarray, weight: np.ndarray, stride: int = 1) -> np.ndarray:
    """One kxk filter per channel; ``weight`` is [channels, 1, k, k]."""
    return np.einsum("nchwij,cij->nchw", _windows(x, weight.shape[2], stride), weight[:, 0], optimize=True)


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Inference BatchNorm over the channel axis of NCHW ``x``, from its running statistics."""

    def per_channel(name: str) -> np.ndarray:
        return state[f"{prefix}.{name}"].astype(np.float64)[None, :, None, None]

    normalized = (x - per_channel("running_mean")) / np.sqrt(per_channel("running_var") + BN_EPSILON)
    return normalized * per_channel("weight") + per_channel("bias")


def relu6(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 6.0)


def _weight(state: dict[str, np.ndarray], name: str) -> np.ndarray:
    return state[name].astype(np.float64)


def mbconv(x: np.ndarray, state: dict[str, np.ndarray], index: int, stride: int) -> np.ndarray:
    """One inverted-residual block (no squeeze-and-excitation in the Lite models)."""
    p = f"_blocks.{index}."
    y = x
    if p + "_expand_conv.weight" in state:
        y = relu6(batch_norm(conv(y, _weight(state, p + "_expand_conv.weight")), state, p + "_bn0"))
    y = relu6(batch_norm(depthwise_conv(y, _weight(state, p + "_depthwise_conv.weight"), stride), state, p + "_bn1"))
    y = batch_norm(conv(y, _weight(state, p + "_project_conv.weight")), state, p + "_bn2")
    if stride == 1 and y.shape == x.shape:
        y = y + x
    return y


def forward(state: dict[str, np.ndarray], batch: np.ndarray) -> np.ndarray:
    """Logits, float64 [N, 1000], for a preprocessed batch [N, 3, H, W]."""
    x = np.asarray(batch, dtype=np.float64)
    x = relu6(batch_norm(conv(x, _weight(state, "_conv_stem.weight"), stride=2), state, "_bn0"))
    index = 0
    for repeats, first_stride in STAGES:
        for r in range(repeats):
            x = mbconv(x, state, index, first_stride if r == 0 else 1)
            index += 1
    if f"_blocks.{index}._depthwise_conv.weight" in state:
        raise ValueError("the state dict has more MBConv blocks than EfficientNet-Lite0")
    x = relu6(batch_norm(conv(x, _weight(state, "_conv_head.weight")), state, "_bn1"))
    features = x.mean(axis=(2, 3))
    return features @ _weight(state, "_fc.weight").T + _weight(state, "_fc.bias")

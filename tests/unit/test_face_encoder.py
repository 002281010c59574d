"""The numpy encoder must give dlib's own descriptors (see facepipe.faces.encoder)."""

import subprocess
import sys
from pathlib import Path

import face_recognition
import face_recognition_models
import numpy as np
import pytest
from PIL import Image

from facepipe.faces.encoder import FaceEncoder, ModelFormatError, ResNet
from facepipe.media import sample_frames
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.sample import photo

#: float32 arithmetic in another order than dlib's: differences are about 1e-7.
TOLERANCE = 1e-5
MODEL = Path(face_recognition_models.face_recognition_model_location())


@pytest.fixture(scope="module")
def numpy_encoder() -> FaceEncoder:
    return FaceEncoder("numpy")


@pytest.fixture(scope="module")
def dlib_encoder() -> FaceEncoder:
    return FaceEncoder("dlib")


def assert_same_descriptors(image: np.ndarray, numpy_encoder: FaceEncoder, dlib_encoder: FaceEncoder) -> int:
    boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    ours, theirs = numpy_encoder(image, boxes), dlib_encoder(image, boxes)
    assert len(ours) == len(theirs) == len(boxes)
    library = face_recognition.face_encodings(image, known_face_locations=boxes)
    assert all(np.array_equal(mine, reference) for mine, reference in zip(theirs, library, strict=True))
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == (128,) and mine.dtype == np.float64
        assert np.abs(mine - reference).max() < TOLERANCE
    return len(boxes)


def test_same_descriptors_as_dlib_on_every_sample_frame(numpy_encoder, dlib_encoder, sample_dir: Path) -> None:
    faces = 0
    for clip in sorted(sample_dir.iterdir()):
        for frame in sample_frames(clip, keyframes_only=False, interval_s=0.5):
            faces += assert_same_descriptors(frame.image, numpy_encoder, dlib_encoder)
    assert faces >= 20  # rotated, small, late and two-person clips: the comparison really ran


@pytest.mark.parametrize("angle, scale", [(0, 1.0), (15, 1.0), (0, 0.35), (-25, 0.6)])
def test_same_descriptors_as_dlib_on_turned_and_small_photos(numpy_encoder, dlib_encoder, angle, scale) -> None:
    image = Image.open(photo("grace_hopper")).convert("RGB")
    image = image.resize((round(image.width * scale), round(image.height * scale)))
    image = image.rotate(angle, expand=True)
    assert assert_same_descriptors(np.asarray(image).copy(), numpy_encoder, dlib_encoder) == 1


def test_same_descriptors_as_dlib_on_cse546_clips(numpy_encoder, dlib_encoder, cse546: Path) -> None:
    clips = sorted((cse546 / "test_cases" / "test_case_1").glob("*.mp4"))[:12]
    faces = sum(
        assert_same_descriptors(frame.image, numpy_encoder, dlib_encoder)
        for clip in clips
        for frame in sample_frames(clip)
    )
    assert faces >= len(clips) // 2  # HOG on the whole frame misses a face or two


def test_no_boxes_no_descriptors(numpy_encoder) -> None:
    assert numpy_encoder(np.zeros((64, 64, 3), np.uint8), []) == []


def test_unknown_encoder_is_refused() -> None:
    with pytest.raises(ValueError, match="FACE_ENCODER must be one of numpy, dlib"):
        FaceEncoder("gpu")


def test_a_face_chip_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="150x150"):
        ResNet(MODEL).descriptor(np.zeros((100, 100, 3), np.uint8))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)) * 4096, id="not-a-model"),
        pytest.param(MODEL.read_bytes()[: 5 << 20], id="truncated"),
        pytest.param(MODEL.read_bytes().replace(b"\x05con_4\x01\x02", b"\x05con_4\x01\x03", 1), id="tensor-version"),
        pytest.param(MODEL.read_bytes().replace(b"\x04fc_2", b"\x04fc_9"), id="no-linear-layer"),
    ],
)
def test_a_file_that_is_not_the_model_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.dat"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError):
        ResNet(path)


def test_the_function_does_not_load_face_recognitions_models() -> None:
    """Importing face_recognition loads all its models: about 107 MiB a worker never uses."""
    code = (
        "import sys, numpy as np; from facepipe.faces.encoder import FaceEncoder;"
        "assert len(FaceEncoder('numpy')(np.zeros((200, 200, 3), np.uint8), [(50, 150, 150, 50)])) == 1;"
        "assert len(FaceEncoder('dlib')(np.zeros((200, 200, 3), np.uint8), [(50, 150, 150, 50)])) == 1;"
        "assert 'face_recognition' not in sys.modules, 'face_recognition was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)

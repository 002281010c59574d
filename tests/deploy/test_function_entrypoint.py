"""The functions start on the host exactly as their containers start them, and answer real requests.

What is taken from each image definition (functions/<function>/Dockerfile,
runtime stage) and from stack.yml, not repeated here:

- the files: `COPY *.py ./` and `COPY facepipe/ ./facepipe/` into WORKDIR,
  laid out in a temporary folder the way faas-cli's build context and the
  Dockerfile lay them out in /home/app;
- the command: of-watchdog's `fprocess`, split on spaces as the watchdog does,
  run from WORKDIR;
- the environment: the image's ENV, then stack.yml's `environment` (what
  OpenFaaS adds), the OpenFaaS secret as files.

What has to differ on the host: /opt/venv is this virtualenv, /home/app and
/var/openfaas/secrets are temporary folders (SECRETS_DIR points at the latter),
PORT is a free port (upstream_url follows it), and the storage and DynamoDB
endpoints are a local moto server, and the classification model the image converts
at build time is converted into a temporary folder. The watchdog itself (a Go binary
from its image) is not run: requests go to upstream_url, where the watchdog sends them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
import requests

from facepipe.answers import parse_labels_csv
from facepipe.classify import convert
from facepipe.settings import DEFAULT_SECRETS_DIR, SECRET_NAMES
from facepipe.upload_students import ensure_table, load_students, write_students
from facepipe_tools.cluster import KNOWN_FACES_KEY
from facepipe_tools.polling import wait_for
from facepipe_tools.sample import photo
from facepipe_tools.stack import free_port
from tests.deploy import deploylib
from tests.deploy.deploylib import CLASSIFICATION_DIR, FUNCTION_DIR, REPO

INPUT = "facepipe-input"
OUTPUT = "facepipe-output"
# Fake credentials for the local moto server only.
FAKE_KEY = "facepipe-test-key"


def _container_layout(tmp: Path, function_dir: Path = FUNCTION_DIR) -> tuple[Path, dict[str, str], list[str]]:
    """WORKDIR with the image's files, the container's environment, and the fprocess argv."""
    _, stages = deploylib.parse_dockerfile(function_dir / "Dockerfile")
    runtime = stages[-1]
    workdir = Path(runtime.all("WORKDIR")[-1].args)
    home = tmp / workdir.relative_to("/")
    home.mkdir(parents=True)
    # faas-cli's build context: the handler folder plus the copied facepipe/.
    context = {path.name: path for path in function_dir.iterdir()}
    context["facepipe"] = REPO / "facepipe"
    for instruction in runtime.all("COPY"):
        if "--from" in instruction.args:
            continue
        source, destination = instruction.args.split()
        target = home / destination
        if source.endswith("/"):
            shutil.copytree(context[source.rstrip("/")], target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            for path in sorted(function_dir.glob(source)):
                shutil.copy2(path, home / path.name)
    image_env = deploylib.dockerfile_env(runtime)
    venv_bin = str(Path(sys.executable).parent)
    env = {key: value.replace("/opt/venv/bin", venv_bin) for key, value in image_env.items()}
    env["PATH"] = env["PATH"].replace("$PATH", os.environ.get("PATH", "/usr/bin:/bin"))
    env["HOME"] = str(home)
    argv = env["fprocess"].split(" ")
    return home, env, argv


def _secrets(tmp: Path) -> Path:
    secrets = tmp / DEFAULT_SECRETS_DIR.lstrip("/")
    secrets.mkdir(parents=True)
    for name in SECRET_NAMES.values():
        (secrets / name).write_text(FAKE_KEY if "key" in name else "local-token")
    shutil.copy(REPO / "data" / "known_faces.json", secrets / KNOWN_FACES_KEY)
    return secrets


def _sample_video(tmp: Path, seconds: int = 1) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    sample = pytest.importorskip("facepipe_tools.sample")
    video = tmp / f"hopper{seconds}s.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-i",
            str(sample.photo("grace_hopper")),
            "-t",
            str(seconds),
            "-r",
            "5",
            "-vf",
            "scale=trunc(iw/2)*2:trunc(ih/2)*2",
            "-pix_fmt",
            "yuv420p",
            str(video),
        ],
        check=True,
        timeout=60,
    )
    return video


def _prepare_storage(endpoint: str) -> None:
    options = {
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": FAKE_KEY,
        "aws_secret_access_key": FAKE_KEY,
    }
    s3 = boto3.client("s3", **options)
    for bucket in (INPUT, OUTPUT):
        s3.create_bucket(Bucket=bucket)
    dynamodb = boto3.client("dynamodb", **options)
    ensure_table(dynamodb, "students")
    write_students(dynamodb, "students", load_students(REPO / "data" / "student_data.json"))


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"the function exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    if not wait_for(up, timeout_s=90):
        pytest.fail(f"the function did not answer within 90 s:\n{log.read_text()[-3000:]}")


def _s3(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_KEY,
        aws_secret_access_key=FAKE_KEY,
    )


def _container_env(tmp_path: Path, moto_endpoint: str) -> tuple[Path, dict[str, str], list[str], str]:
    """WORKDIR, environment, argv and the upstream URL of a function started as in its container."""
    home, env, argv = _container_layout(tmp_path)
    secrets = _secrets(tmp_path)
    _prepare_storage(moto_endpoint)

    stack_env = deploylib.load_stack()["functions"]["face-recognition"]["environment"]
    env.update(stack_env)
    env["SECRETS_DIR"] = str(secrets)
    env["KNOWN_FACES"] = stack_env["KNOWN_FACES"].replace(DEFAULT_SECRETS_DIR, str(secrets))
    env["S3_ENDPOINT_URL"] = moto_endpoint
    env["DYNAMODB_ENDPOINT_URL"] = moto_endpoint
    env["FACEPIPE_ENV_FILE"] = str(tmp_path / "no.env")  # no .env from the repository
    port = free_port()
    env["PORT"] = str(port)
    upstream = env["upstream_url"].replace(":5000", f":{port}")
    assert env["upstream_url"] == "http://127.0.0.1:5000" and argv == ["python", "index.py"]
    # The image serves the metrics on their own port too (the watchdog's own take 8081).
    assert env["METRICS_PORT"] == "8082"
    env["METRICS_PORT"] = str(free_port())
    return home, env, argv, upstream


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_function_runs_as_in_its_container_and_answers(tmp_path: Path, moto_endpoint: str) -> None:
    if not (FUNCTION_DIR / "index.py").is_file():
        pytest.skip("functions/face-recognition/index.py is not there yet")
    video = _sample_video(tmp_path)
    home, env, argv, upstream = _container_env(tmp_path, moto_endpoint)

    log = tmp_path / "function.log"
    with log.open("w") as output:
        process = subprocess.Popen(argv, cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"{upstream}/healthz", process, log)
        s3 = _s3(moto_endpoint)

        bad = requests.post(upstream, data=b"not json", timeout=30)
        assert bad.status_code == 400 and "error" in bad.json()
        missing = requests.post(upstream, json={"bucket": INPUT, "key": "missing.mp4"}, timeout=30)
        assert missing.status_code == 404, missing.text

        s3.upload_file(str(video), INPUT, "hopper.mp4")
        answer = requests.post(upstream, json={"bucket": INPUT, "key": "hopper.mp4"}, timeout=120)
        assert answer.status_code == 200, answer.text
        csv = s3.get_object(Bucket=OUTPUT, Key="hopper.csv")["Body"].read().decode()
        assert csv.splitlines() == ["name,major,year", "grace_hopper,computer_science,senior"]

        s3.put_object(Bucket=INPUT, Key="broken.mp4", Body=b"this is not a video")
        broken = requests.post(upstream, json={"bucket": INPUT, "key": "broken.mp4"}, timeout=120)
        assert broken.status_code == 422, broken.text
        assert json.loads(s3.get_object(Bucket=OUTPUT, Key="broken.error.json")["Body"].read())["error"]

        metrics = requests.get(f"{upstream}/metrics", timeout=10)
        assert metrics.status_code == 200
        text = metrics.text
        assert 'facerec_videos_total{outcome="ok"} 1.0' in text
        assert 'facerec_videos_total{outcome="error"} 1.0' in text
        assert 'facerec_videos_total{outcome="not_found"} 1.0' in text
        assert "facerec_video_seconds_bucket" in text and 'facerec_stage_seconds_count{stage="detect"}' in text
        for status in (200, 400, 404, 422):
            assert f'facerec_requests_total{{status="{status}"}} 1.0' in text
        # The same registry on METRICS_PORT, outside the watchdog's max_inflight.
        own = requests.get(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics", timeout=10)
        assert own.status_code == 200 and 'facerec_videos_total{outcome="ok"} 1.0' in own.text
    finally:
        _stop(process)
    assert process.returncode == 0, log.read_text()[-3000:]


def test_sigterm_drains_the_request_in_flight(tmp_path: Path, moto_endpoint: str) -> None:
    """As on scale-down: SIGTERM while a long request is in flight. That request completes
    with 200 and its answer is written, a request sent after SIGTERM is refused with 503 and
    Retry-After, and the process exits 0."""
    video = _sample_video(tmp_path, seconds=10)
    home, env, argv, upstream = _container_env(tmp_path, moto_endpoint)
    # Every frame of the clip is looked at: a request of several seconds.
    env.update({"FRAME_SAMPLING": "interval", "FRAME_INTERVAL_S": "0", "MAX_FRAMES": "50"})
    work = tmp_path / "work"
    work.mkdir()
    env["TMPDIR"] = str(work)
    s3 = _s3(moto_endpoint)
    s3.upload_file(str(video), INPUT, "long.mp4")

    log = tmp_path / "function.log"
    with log.open("w") as output:
        process = subprocess.Popen(argv, cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"{upstream}/healthz", process, log)
        with ThreadPoolExecutor(max_workers=1) as pool:
            long = pool.submit(requests.post, upstream, json={"bucket": INPUT, "key": "long.mp4"}, timeout=120)
            # In flight: the object is in the function's temporary folder.
            assert wait_for(lambda: any(work.glob("facepipe-*")), timeout_s=60), log.read_text()[-3000:]
            process.send_signal(signal.SIGTERM)
            draining = wait_for(lambda: _log_events(log, "draining"), timeout_s=30)
            assert draining and draining[0]["in_flight"] == 1, log.read_text()[-3000:]
            late = requests.post(upstream, json={"bucket": INPUT, "key": "long.mp4"}, timeout=30)
            assert late.status_code == 503 and late.headers["Retry-After"], late.text
            answer = long.result(timeout=120)
        assert answer.status_code == 200 and answer.json()["frames"] == 50, answer.text
        csv = s3.get_object(Bucket=OUTPUT, Key="long.csv")["Body"].read().decode()
        assert csv.splitlines() == ["name,major,year", "grace_hopper,computer_science,senior"]
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert _log_events(log, "drained"), log.read_text()[-3000:]
    finally:
        _stop(process)


def _log_events(log: Path, event: str) -> list[dict]:
    """The function's JSON log lines for `event`."""
    lines = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            lines.append(record)
    return lines


# ------------------------------------------------------------------- image classification


def test_classification_function_runs_as_in_its_container(tmp_path: Path, moto_endpoint: str) -> None:
    """functions/image-classification as its image runs it: the model at the image's
    CLASSIFIER_MODEL (here converted into a temporary folder), only the storage keys as secret
    files. Ready (lock file) once the model is loaded; a photo gets its labels, a video an
    error record; SIGTERM drains, removes the lock and exits 0."""
    home, env, argv = _container_layout(tmp_path, CLASSIFICATION_DIR)
    stack_env = deploylib.load_stack()["functions"]["image-classification"]["environment"]
    env.update(stack_env)
    assert env["CLASSIFIER_MODEL"] == stack_env["CLASSIFIER_MODEL"] and argv == ["python", "index.py"]
    images_input, images_output = stack_env["INPUT_BUCKET"], stack_env["OUTPUT_BUCKET"]
    model = tmp_path / env["CLASSIFIER_MODEL"].lstrip("/")
    convert.write_model(model)
    env["CLASSIFIER_MODEL"] = str(model)
    secrets = tmp_path / DEFAULT_SECRETS_DIR.lstrip("/")
    secrets.mkdir(parents=True)
    for name in ("s3-access-key-id", "s3-secret-access-key"):
        (secrets / name).write_text(FAKE_KEY)
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    env.update(
        SECRETS_DIR=str(secrets), S3_ENDPOINT_URL=moto_endpoint, FACEPIPE_ENV_FILE=str(tmp_path / "no.env"),
        PORT=str(port), METRICS_PORT=str(free_port()), TMPDIR=str(work),
    )  # fmt: skip
    upstream = env["upstream_url"].replace(":5000", f":{port}")
    s3 = _s3(moto_endpoint)
    for bucket in (images_input, images_output):
        s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(photo("cat")), images_input, "cat.png")
    s3.upload_file(str(_sample_video(tmp_path)), images_input, "clip.mp4")
    lock = work / ".lock"

    log = tmp_path / "function.log"
    with log.open("w") as output:
        process = subprocess.Popen(argv, cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"{upstream}/healthz", process, log)
        assert lock.is_file(), "ready: the lock file the readiness probe reads"
        answer = requests.post(upstream, json={"bucket": images_input, "key": "cat.png"}, timeout=60)
        assert answer.status_code == 200, answer.text
        labels = answer.json()["labels"]
        assert labels[0]["label"] in {"a cat having a striped coat", "tabby cat", "Egyptian Mau"}, labels
        csv = s3.get_object(Bucket=images_output, Key="cat.csv")["Body"].read().decode()
        assert [vars(label) for label in parse_labels_csv(csv)] == labels
        assert s3.head_object(Bucket=images_output, Key="cat.jpg")["ContentType"] == "image/jpeg"

        video = requests.post(upstream, json={"bucket": images_input, "key": "clip.mp4"}, timeout=60)
        assert video.status_code == 422 and video.json()["error"]["error"] == "unreadable", video.text
        assert json.loads(s3.get_object(Bucket=images_output, Key="clip.error.json")["Body"].read())["detail"]

        own = requests.get(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics", timeout=10).text
        assert 'facerec_videos_total{outcome="ok"} 1.0' in own and 'facerec_requests_total{status="422"} 1.0' in own
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert not lock.exists() and _log_events(log, "drained")
    finally:
        _stop(process)

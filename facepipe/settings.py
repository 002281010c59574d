"""Settings from the environment, a `.env` file and OpenFaaS secrets.

Order of precedence for every setting: an OpenFaaS secret file (only for the
credentials and the token), then the process environment, then the file named by
``FACEPIPE_ENV_FILE`` or else the nearest `.env` in the current folder or above it
(the checkout's, when a command runs in it; none in an image), then the default.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from dotenv import find_dotenv, load_dotenv

DEFAULT_SECRETS_DIR = "/var/openfaas/secrets"

#: Settings that may come from a mounted secret, with the secret's file name.
SECRET_NAMES = {
    "S3_ACCESS_KEY_ID": "s3-access-key-id",
    "S3_SECRET_ACCESS_KEY": "s3-secret-access-key",
    "AWS_ACCESS_KEY_ID": "aws-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key",
    "NOTIFY_TOKEN": "notify-token",
}


class ConfigurationError(ValueError):
    """The service is set up wrongly (a setting, the known faces, a model file): no request
    can succeed until an operator fixes it."""


class SettingsError(ConfigurationError):
    """A setting is missing or malformed."""


#: S3 bucket names (the rules RGW and AWS share): 3-63 lower-case letters, digits, dots, hyphens.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: OpenFaaS function names are DNS labels (they name a Deployment and a Service).
FUNCTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Route:
    """Objects created in `input_bucket` go to `function`, whose answers land in `output_bucket`."""

    input_bucket: str
    function: str
    output_bucket: str

    def __str__(self) -> str:
        return f"{self.input_bucket}={self.function}>{self.output_bucket}"


def parse_routes(text: str) -> list[Route]:
    """`<input bucket>=<function>><output bucket>` entries, comma-separated (the ROUTES setting)."""
    routes = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        match = re.fullmatch(r"([^=>]+)=([^=>]+)>([^=>]+)", entry)
        if match is None:
            raise SettingsError(f"ROUTES entry {entry!r} is not <input bucket>=<function>><output bucket>")
        routes.append(Route(*(part.strip() for part in match.groups())))
    return check_routes(routes, "ROUTES")


def check_routes(routes: list[Route], source: str) -> list[Route]:
    """The routes without repeats; SettingsError for bad names, a bucket routed to two functions,
    or an output bucket that is also an input bucket (its answers would be processed again)."""
    unique = list(dict.fromkeys(routes))
    if not unique:
        raise SettingsError(f"{source} has no route")
    for route in unique:
        for bucket in (route.input_bucket, route.output_bucket):
            if not BUCKET_NAME.match(bucket) or ".." in bucket:
                raise SettingsError(f"{source}: {bucket!r} is not a valid bucket name")
        if not FUNCTION_NAME.match(route.function):
            raise SettingsError(f"{source}: {route.function!r} is not a valid function name")
    inputs: dict[str, Route] = {}
    for route in unique:
        if route.input_bucket in inputs:
            raise SettingsError(
                f"{source}: bucket {route.input_bucket!r} is routed twice ({inputs[route.input_bucket]}, {route})"
            )
        inputs[route.input_bucket] = route
    for route in unique:
        if route.output_bucket in inputs:
            raise SettingsError(
                f"{source}: {route.output_bucket!r} is the output bucket of {route} and an input bucket too"
            )
    return unique


@dataclass(frozen=True)
class Settings:
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    input_bucket: str = "input"
    output_bucket: str = "output"
    dynamodb_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    students_table: str = "students"
    openfaas_gateway: str = "http://127.0.0.1:8080"
    function_name: str = "face-recognition"
    # Image classification: its buckets and function, and the ONNX model (the function's image
    # has it; the local stack converts it at start).
    image_input_bucket: str = "images-input"
    image_output_bucket: str = "images-output"
    image_function_name: str = "image-classification"
    classifier_model: str | None = None
    #: ROUTES: which function each input bucket's objects go to (see `routes`); unset, both
    #: functions' routes from the settings above.
    routes_table: str | None = field(default=None, metadata={"env": "ROUTES"})
    notify_token: str | None = None
    known_faces: str | None = None
    # Recognition
    match_tolerance: float = 0.6
    max_object_bytes: int = 200 * 1024 * 1024
    #: `interval`: the picture on screen every FRAME_INTERVAL_S, so a face shown for that long is
    #: looked at (the decoder skips what those frames do not need); `keyframes`: keyframes only.
    frame_sampling: str = "interval"  # interval | keyframes
    frame_interval_s: float = 1.0
    #: Frames looked at per video: 60 at 1 s cover a minute; a longer video is sampled evenly.
    max_frames: int = 60
    detect_width: int = 640
    #: Smallest face (pixels, in the original frame) detection must find.
    min_face_px: int = 40
    face_encoder: str = "numpy"  # numpy | dlib (same descriptors; see facepipe.faces.encoder)
    ffmpeg_timeout_s: float = 60.0
    #: The whole of one object (download, queue, decode, detection) must fit in this, below
    #: of-watchdog's exec_timeout (2 m), so the function answers before the watchdog's 504.
    function_timeout_s: float = 100.0
    student_cache_ttl_s: float = 300.0
    #: A function request may name at most this many objects (RGW `Records`): each is worked
    #: off in turn within the one request, so a large batch would outlive every time limit.
    max_records_per_request: int = 10
    # Notifier
    notify_url: str = "http://127.0.0.1:8090/"
    notifier_concurrency: int = 4
    invoke_attempts: int = 5
    invoke_timeout_s: float = 300.0
    reconcile_interval_s: float = 60.0
    topic_name: str = "face-recognition-input"
    persistent_notifications: bool = False
    #: Failed invocations (crash, timeout, 5xx) of one object version before the notifier gives
    #: up on it and writes a `failed` error record (dead letter) instead of trying again.
    dead_letter_attempts: int = 3

    def require(self, *names: str) -> None:
        """Raise SettingsError naming every listed setting that is empty."""
        missing = [env_name(n) for n in names if getattr(self, n) in (None, "")]
        if missing:
            raise SettingsError("missing settings: " + ", ".join(missing))

    def routes(self) -> list[Route]:
        """The routing table: ROUTES, or else the face route (INPUT_BUCKET, FUNCTION_NAME,
        OUTPUT_BUCKET) and the image route (the IMAGE_* settings). Raises SettingsError."""
        if self.routes_table is not None:
            return parse_routes(self.routes_table)
        derived = [
            Route(self.input_bucket, self.function_name, self.output_bucket),
            Route(self.image_input_bucket, self.image_function_name, self.image_output_bucket),
        ]
        return check_routes(derived, "the bucket and function settings")

    def route_for(self, bucket: str) -> Route | None:
        """The route of an input bucket, or None when objects there go nowhere."""
        return next((route for route in self.routes() if route.input_bucket == bucket), None)


def env_name(name: str) -> str:
    """The environment variable of a Settings field (its name upper-cased, unless it says otherwise)."""
    return Settings.__dataclass_fields__[name].metadata.get("env", name.upper())


def _read_secret(name: str, secrets_dir: Path) -> str | None:
    path = secrets_dir / name
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _convert(raw: str, default: object, name: str) -> object:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{name} must be true or false, not {raw!r}")
    if isinstance(default, (int, float)):
        try:
            value = type(default)(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, not {raw!r}") from None
        if value < 0:
            raise SettingsError(f"{name} must not be negative")
        return value
    if default is None:
        return raw or None
    return raw


def load_settings(env_file: str | os.PathLike | None = None) -> Settings:
    """Build Settings from secrets, the environment and `.env`."""
    env_path = Path(env_file or os.environ.get("FACEPIPE_ENV_FILE") or find_dotenv(usecwd=True) or ".env")
    if env_path.is_file():
        load_dotenv(env_path, override=False)
    secrets_dir = Path(os.environ.get("SECRETS_DIR", DEFAULT_SECRETS_DIR))
    values: dict[str, object] = {}
    for setting in fields(Settings):
        name = env_name(setting.name)
        raw = None
        if name in SECRET_NAMES:
            raw = _read_secret(SECRET_NAMES[name], secrets_dir)
        if raw is None:
            raw = os.environ.get(name)
        if raw is not None:
            values[setting.name] = _convert(raw.strip(), setting.default, name)
    return Settings(**values)

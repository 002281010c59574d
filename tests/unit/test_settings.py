from pathlib import Path

import pytest

from facepipe.settings import Route, Settings, SettingsError, env_name, load_settings

ALL_NAMES = [env_name(name) for name in Settings.__dataclass_fields__]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ALL_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("FACEPIPE_ENV_FILE", str(tmp_path / "none.env"))
    return tmp_path


def test_defaults_without_any_configuration(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.input_bucket == "input"
    assert settings.dynamodb_endpoint_url is None  # unset means AWS
    assert settings.match_tolerance == 0.6


def test_env_file_is_read_but_environment_wins(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = clean_env / "stack.env"
    env_file.write_text("INPUT_BUCKET=from-file\nOUTPUT_BUCKET=out-file\nMATCH_TOLERANCE=0.5\n")
    monkeypatch.setenv("INPUT_BUCKET", "from-env")
    settings = load_settings(env_file)
    assert settings.input_bucket == "from-env"
    assert settings.output_bucket == "out-file"
    assert settings.match_tolerance == 0.5


def test_secret_files_take_precedence_over_environment(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = clean_env / "secrets"
    secrets.mkdir()
    (secrets / "s3-secret-access-key").write_text("from-secret\n")
    (secrets / "notify-token").write_text("token-from-secret")
    monkeypatch.setenv("S3_SECRET_ACCESS_KEY", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-from-env")
    settings = load_settings()
    assert settings.s3_secret_access_key == "from-secret"
    assert settings.notify_token == "token-from-secret"
    assert settings.aws_secret_access_key == "aws-from-env"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MATCH_TOLERANCE", "close", "must be a number"),
        ("MAX_FRAMES", "-3", "must not be negative"),
        ("PERSISTENT_NOTIFICATIONS", "maybe", "true or false"),
    ],
)
def test_malformed_values_are_clear_errors(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_booleans_and_empty_optional_values(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENT_NOTIFICATIONS", "yes")
    monkeypatch.setenv("DYNAMODB_ENDPOINT_URL", "")
    settings = load_settings()
    assert settings.persistent_notifications is True
    assert settings.dynamodb_endpoint_url is None


def test_require_names_every_missing_setting(clean_env: Path) -> None:
    with pytest.raises(SettingsError, match="KNOWN_FACES, NOTIFY_TOKEN"):
        load_settings().require("known_faces", "notify_token", "input_bucket")


# ---------------------------------------------------------------------------------- routes


def test_routes_default_to_both_functions(clean_env: Path) -> None:
    settings = load_settings()
    assert (settings.image_input_bucket, settings.image_output_bucket) == ("images-input", "images-output")
    assert settings.image_function_name == "image-classification"
    assert settings.classifier_model is None
    assert settings.routes() == [
        Route("input", "face-recognition", "output"),
        Route("images-input", "image-classification", "images-output"),
    ]
    assert settings.route_for("images-input") == Route("images-input", "image-classification", "images-output")
    assert settings.route_for("elsewhere") is None


def test_derived_routes_follow_the_bucket_and_function_settings(clean_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("INPUT_BUCKET", "facepipe-input")
    monkeypatch.setenv("OUTPUT_BUCKET", "facepipe-output")
    monkeypatch.setenv("IMAGE_INPUT_BUCKET", "photos")
    monkeypatch.setenv("IMAGE_FUNCTION_NAME", "classify")
    monkeypatch.setenv("CLASSIFIER_MODEL", "/models/efficientnet-lite0.onnx")
    settings = load_settings()
    assert [str(route) for route in settings.routes()] == [
        "facepipe-input=face-recognition>facepipe-output",
        "photos=classify>images-output",
    ]
    assert settings.classifier_model == "/models/efficientnet-lite0.onnx"


def test_routes_from_the_routes_setting(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTES", " input=face-recognition>output , images-input=image-classification>images-output,")
    settings = load_settings()
    assert settings.routes_table is not None
    assert settings.routes() == [
        Route("input", "face-recognition", "output"),
        Route("images-input", "image-classification", "images-output"),
    ]
    monkeypatch.setenv("ROUTES", "photos=image-classification>labels")
    assert load_settings().routes() == [Route("photos", "image-classification", "labels")]
    # Empty means unset: the derived routes.
    monkeypatch.setenv("ROUTES", "")
    assert len(load_settings().routes()) == 2


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ("input=face-recognition", "is not <input bucket>=<function>><output bucket>"),
        ("input>output", "is not <input bucket>=<function>><output bucket>"),
        ("a=b=c>d", "is not <input bucket>=<function>><output bucket>"),
        ("Input=face-recognition>output", "'Input' is not a valid bucket name"),
        ("in=face-recognition>output", "'in' is not a valid bucket name"),
        ("input=face-recognition>out..put", "'out..put' is not a valid bucket name"),
        ("input=Face_Recognition>output", "'Face_Recognition' is not a valid function name"),
        ("input=face-recognition>output,input=image-classification>images-output", "routed twice"),
        ("input=face-recognition>images,images=image-classification>labels", "an input bucket too"),
        ("input=face-recognition>input", "an input bucket too"),
        (",", "has no route"),
    ],
)
def test_bad_routes_are_clear_errors(clean_env: Path, monkeypatch, routes: str, message: str) -> None:
    monkeypatch.setenv("ROUTES", routes)
    settings = load_settings()  # a malformed table fails where it is used: the notifier, the web tier
    with pytest.raises(SettingsError, match=message):
        settings.routes()


def test_the_same_route_twice_is_one_route(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTES", "input=face-recognition>output,input=face-recognition>output")
    assert load_settings().routes() == [Route("input", "face-recognition", "output")]


def test_derived_routes_that_clash_are_clear_errors(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_INPUT_BUCKET", "input")
    with pytest.raises(SettingsError, match="'input' is routed twice"):
        load_settings().routes()
    monkeypatch.setenv("IMAGE_INPUT_BUCKET", "images-input")
    monkeypatch.setenv("IMAGE_OUTPUT_BUCKET", "input")
    with pytest.raises(SettingsError, match="an input bucket too"):
        load_settings().routes()

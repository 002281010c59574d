from pathlib import Path

import pytest

from facepipe.settings import Settings, SettingsError, load_settings

ALL_NAMES = [name.upper() for name in Settings.__dataclass_fields__]


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

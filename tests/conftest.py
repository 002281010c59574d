"""Fixtures shared by all test folders."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from facepipe_tools.mapping import parse_mapping
from facepipe_tools.paths import cse546_dir
from facepipe_tools.sample import build_sample
from tests.aws import moto_server

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
FUNCTION_DIR = REPO_ROOT / "functions" / "face-recognition"

def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI time limit, `kill`) ends the run as Ctrl-C does, so that the fixtures
    still stop the stacks and servers they started."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


# Tests never read the developer's .env: each test states the settings it needs.
os.environ["FACEPIPE_ENV_FILE"] = str(REPO_ROOT / "tests" / "no-such.env")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in sample videos, generated once per test session."""
    folder = tmp_path_factory.mktemp("sample")
    build_sample(folder)
    return folder


@pytest.fixture(scope="session")
def sample_mapping() -> list:
    return parse_mapping((DATA_DIR / "sample_mapping").read_text())


@pytest.fixture(scope="session")
def cse546() -> Path:
    folder = cse546_dir()
    if not (folder / "mapping").is_file():
        pytest.skip(f"CSE546 reference data not found at {folder} (set CSE546_DIR to its folder)")
    return folder


@pytest.fixture
def s3():
    """moto S3 in-process with the buckets `input` and `output`."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="input")
        client.create_bucket(Bucket="output")
        yield client


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server over real HTTP for one test module (S3, DynamoDB, ...)."""
    with moto_server() as url:
        yield url

"""Fixtures shared by the unit tests."""

import boto3
import pytest
from moto import mock_aws


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="input")
        client.create_bucket(Bucket="output")
        yield client

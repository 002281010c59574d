"""Fixtures of the unit tests: the notifier's, on the stand-in gateway of notifierfake.py
and the `s3` fixture (moto) of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from facepipe.notifier.service import Notifier
from facepipe.settings import Settings
from tests.unit.notifierfake import FAST, Gateway, notifier_settings


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    gw.close()


@pytest.fixture
def settings(gateway: Gateway) -> Settings:
    return notifier_settings(gateway)


@pytest.fixture
def notifier(settings: Settings, s3) -> Iterator[Notifier]:
    instance = Notifier(settings, s3=s3, backoff=FAST)
    yield instance
    instance.stop(grace_s=2)

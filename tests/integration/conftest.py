"""Fixtures for tests against a real local stack (Ceph RGW, moto DynamoDB, function runner
serving both functions, notifier, web tier, Prometheus), booted once per session in a temporary folder on free ports,
so that it never clashes with a developer's `make up` stack on the default ports.

- `local_stack`: the running `LocalStack` (session scope; torn down at the end, also when
  tests fail). Tests that use it also get the stack's settings in their environment
  (and FACEPIPE_ENV_FILE pointing to the stack's env file), so `load_settings()` and
  scripts run with `subprocess` talk to this stack.
- `stack_settings`: `Settings` of that stack.
- `stack_env`: an environment dict for subprocesses (os.environ + the stack's settings).
- `prometheus_url`: the session stack's Prometheus (skipped, failed in CI, without it).
- `start_stack`: boots a stack a test module built itself, torn down after the module.
- `make_stack`: factory for an extra, throw-away stack in its own temporary folder (stopped
  at the end of the test if the test did not stop it).

Without the Ceph programs the tests are skipped with the reason, except in CI (CI=true),
where a missing program is an error: CI must run them. The same goes for Prometheus: the
stacks run it when it is installed (always in CI), and `require_prometheus` skips otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from facepipe.settings import Settings
from facepipe_tools.stack import (
    LocalStack,
    StackError,
    free_port,
    free_port_range,
    missing_ceph_binaries,
    prometheus_binary,
)

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_ceph() -> None:
    """Skip (fail in CI) when the Ceph programs are not installed."""
    missing = missing_ceph_binaries()
    if missing:
        message = f"Ceph programs not installed: {', '.join(missing)} (run `make install` as root)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def require_prometheus() -> None:
    """Skip (fail in CI) when the `prometheus` program is not installed."""
    if prometheus_binary() is None:
        message = "prometheus is not installed (run `make install` as root)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def new_stack(state_dir: Path, **overrides: object) -> LocalStack:
    """A LocalStack in `state_dir` on free ports, writing its env file into `state_dir`; one
    classification worker unless `image_workers` says otherwise."""
    workers = int(overrides.pop("workers", None) or os.environ.get("FACEPIPE_TEST_WORKERS") or 2)
    image_workers = int(overrides.pop("image_workers", 1))
    options: dict = {
        "env_file": state_dir / "env",
        "mon_port": free_port(),
        "rgw_port": free_port(),
        "dynamodb_port": free_port(),
        "gateway_port": free_port(),
        "notifier_port": free_port(),
        "web_port": free_port(),
        "prometheus_port": free_port(),
        "prometheus": IN_CI or prometheus_binary() is not None,
        # Each function's workers' ports, then their METRICS_PORTs (function_runner.worker_ports).
        "worker_base_port": free_port_range(2 * (workers + image_workers)),
        "workers": workers,
        "image_workers": image_workers,
        "log": lambda line: print(f"stack {state_dir.name}: {line}"),
    }
    options.update(overrides)
    return LocalStack(state_dir, **options)


def boot(stack: LocalStack) -> None:
    """`up`, turning a failure into a test failure that shows the log tail, not a traceback."""
    try:
        stack.up()
    except StackError as err:
        detail = [str(err)]
        if err.output:
            detail.append(err.output[-2000:])
        if err.log is not None and err.log.is_file():
            tail = "\n".join(err.log.read_text(errors="replace").splitlines()[-30:])
            detail.append(f"--- {err.log}:\n{tail}")
        try:
            stack.down()
        finally:
            pytest.fail("local stack did not come up: " + "\n".join(detail), pytrace=False)


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    require_ceph()
    stack = new_stack(tmp_path_factory.mktemp("stack"))
    try:
        boot(stack)
        yield stack
    finally:
        stack.down()


@pytest.fixture(autouse=True)
def _stack_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the environment at the session stack, only for tests that use it."""
    if "local_stack" not in request.fixturenames:
        return
    stack: LocalStack = request.getfixturevalue("local_stack")
    for name, value in stack.settings_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FACEPIPE_ENV_FILE", str(stack.env_file))


@pytest.fixture
def stack_settings(local_stack: LocalStack) -> Settings:
    return local_stack.settings()


@pytest.fixture
def stack_env(local_stack: LocalStack) -> dict[str, str]:
    env = dict(os.environ)
    env.update(local_stack.settings_env())
    env["FACEPIPE_ENV_FILE"] = str(local_stack.env_file)
    return env


@pytest.fixture
def prometheus_url(local_stack: LocalStack) -> str:
    require_prometheus()
    url = local_stack.settings_env().get("PROMETHEUS_URL")
    assert url, "the session stack runs without Prometheus"
    return url


@pytest.fixture(scope="module")
def start_stack() -> Iterator[Callable[[LocalStack], LocalStack]]:
    """Boots a stack the test module made (for example a chaos stack with its own settings);
    every stack it started is torn down when the module is done."""
    require_ceph()
    started: list[LocalStack] = []

    def start(stack: LocalStack) -> LocalStack:
        started.append(stack)
        boot(stack)
        return stack

    yield start
    for stack in started:
        stack.down()


@pytest.fixture
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LocalStack]]:
    require_ceph()
    made: list[LocalStack] = []

    def factory(**overrides: object) -> LocalStack:
        stack = new_stack(tmp_path_factory.mktemp("extra-stack"), **overrides)
        made.append(stack)
        return stack

    yield factory
    for stack in made:
        stack.down()

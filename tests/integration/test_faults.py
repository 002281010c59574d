"""The fault scenarios of `make chaos`, small: 12 uploads of the built-in sample per scenario
on a stack of their own (the faults kill its parts). Each must end with exactly one right
answer per upload: nothing lost, nothing duplicated."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepipe_tools.chaos import (
    SCENARIOS,
    ChaosStack,
    ScenarioResult,
    ScenarioRunner,
    StackClient,
    make_fault,
    new_chaos_stack,
    sample_clips,
    scenario_table,
)
from facepipe_tools.paths import REPO_ROOT

pytestmark = pytest.mark.integration

UPLOADS = 12
RATE = 4.0


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory, start_stack) -> ChaosStack:
    state = tmp_path_factory.mktemp("faults")
    return start_stack(
        new_chaos_stack(
            state,
            REPO_ROOT / "data" / "known_faces.json",
            REPO_ROOT / "data" / "student_data.json",
            log=lambda line: print(f"fault stack: {line}"),
        )
    )


@pytest.fixture(scope="module")
def runner(fault_stack: ChaosStack, sample_dir: Path) -> ScenarioRunner:
    clips = sample_clips(sample_dir, REPO_ROOT / "data" / "sample_mapping", UPLOADS)
    return ScenarioRunner(StackClient(fault_stack), clips, RATE, timeout_s=300)


@pytest.fixture(scope="module")
def rows() -> list[ScenarioResult]:
    """Every row so far, printed as the chaos table after each test (pytest -s shows it)."""
    return []


@pytest.fixture(scope="module")
def baseline(runner: ScenarioRunner, rows: list[ScenarioResult]) -> ScenarioResult:
    result = runner.run(None)
    rows.append(result)
    assert result.passed, result.problems
    return result


def assert_clean(result: ScenarioResult) -> None:
    assert result.results == result.videos, result.problems
    assert result.lost == 0, result.problems
    assert result.duplicated == 0, result.problems
    assert result.wrong == 0, result.problems


@pytest.mark.parametrize("name", SCENARIOS)
def test_fault_loses_and_duplicates_nothing(
    name: str, runner: ScenarioRunner, baseline: ScenarioResult, rows: list[ScenarioResult]
) -> None:
    fault = make_fault(name, runner.client)
    result = runner.run(fault, baseline)
    rows.append(result)
    print("\n" + scenario_table(rows) + f"\n{result.name}: {result.note}")
    assert_clean(result)
    assert result.recover_s is not None
    if name == "duplicate-events":
        assert result.reprocessed == 0, "a duplicate delivery made the function recognise a clip again"
    if name in ("notifier-kill", "rgw-restart", "function-kill"):
        assert result.fault_at_s is not None and result.down_s is not None
    if name == "function-kill":
        assert runner.client.stack.worker_pids(), "the runner did not start its workers again"

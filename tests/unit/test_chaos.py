"""The chaos run's arithmetic on the function workers' metrics (the rest runs on real stacks:
tests/integration/test_faults.py and test_bad_input.py)."""

from __future__ import annotations

from facepipe_tools.chaos import ScenarioResult, recognitions_between, scenario_table
from facepipe_tools.metrics_client import Samples, parse


def worker(started: float, ok: int, error: int = 0, skipped: int = 0) -> Samples:
    return parse(
        f"process_start_time_seconds {started}\n"
        f'facerec_videos_total{{outcome="ok"}} {ok}\n'
        f'facerec_videos_total{{outcome="error"}} {error}\n'
        f'facerec_videos_total{{outcome="skipped"}} {skipped}\n'
    )


def test_recognitions_count_ok_and_error_but_not_skipped() -> None:
    before = [worker(100.0, ok=2), worker(101.0, ok=1, error=1)]
    after = [worker(100.0, ok=7, skipped=4), worker(101.0, ok=4, error=2, skipped=9)]
    assert recognitions_between(before, after) == 5 + 3 + 1


def test_recognitions_are_unknown_when_a_worker_restarted_or_did_not_answer() -> None:
    before = [worker(100.0, ok=2), worker(101.0, ok=1)]
    assert recognitions_between(before, [worker(100.0, ok=3), worker(250.0, ok=1)]) is None
    assert recognitions_between(before, [worker(100.0, ok=3), Samples()]) is None


def test_unknown_reprocessing_shows_as_a_dash() -> None:
    known = ScenarioResult("baseline", 4, results=4, reprocessed=0)
    unknown = ScenarioResult("function-kill", 4, results=4)
    table = scenario_table([known, unknown]).splitlines()
    reproc = table[0].split().index("reproc")
    assert table[2].split()[reproc] == "0"
    assert table[3].split()[reproc] == "-"

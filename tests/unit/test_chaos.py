"""The chaos run's arithmetic on the function workers' metrics, and the memory scenario's
pieces (the rest runs on real stacks: tests/integration/test_faults.py and test_bad_input.py)."""

from __future__ import annotations

import json

from facepipe_tools import hostile_media
from facepipe_tools.chaos import (
    WORKER_RSS_LIMIT_MB,
    MemoryResult,
    RssSampler,
    ScenarioResult,
    memory_table,
    recognitions_between,
    scenario_table,
    summary_json,
    vmhwm_mb,
)
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


# ----------------------------------------------------------------------------- the memory scenario


STATUS = "Name:\tpython\nVmPeak:\t 1200000 kB\nVmHWM:\t  {hwm} kB\nVmRSS:\t  300000 kB\n"


def test_peak_memory_is_read_from_proc_status() -> None:
    assert vmhwm_mb(STATUS.format(hwm=512 * 1024)) == 512.0
    assert vmhwm_mb("Name:\tzombie\n") is None


def test_the_sampler_keeps_each_workers_peak_also_after_it_died() -> None:
    workers = {11: 300 * 1024, 12: 400 * 1024}
    sampler = RssSampler(lambda: list(workers), lambda pid: STATUS.format(hwm=workers[pid]) if pid in workers else None)
    sampler.sample()
    workers[11] = 650 * 1024
    sampler.sample()
    del workers[11]  # died: its last sample stays
    workers[13] = 200 * 1024  # its successor
    sampler.sample()
    assert sampler.peaks == {11: 650.0, 12: 400.0, 13: 200.0}
    assert sampler.max_mb == 650.0
    assert RssSampler(lambda: []).max_mb is None


def test_the_memory_scenario_passes_only_within_the_bound_with_every_answer_right() -> None:
    good = MemoryResult(files=3, answered=3, max_worker_rss_mb=612.5)
    assert good.passed
    assert not MemoryResult(files=3, answered=3, max_worker_rss_mb=WORKER_RSS_LIMIT_MB + 1).passed
    assert not MemoryResult(files=3, answered=2, max_worker_rss_mb=500).passed
    assert not MemoryResult(files=3, answered=3, failed=["x: wrong"], max_worker_rss_mb=500).passed
    assert not MemoryResult(files=3, answered=3, worker_restarts=1, max_worker_rss_mb=500).passed
    assert not MemoryResult(files=3, answered=3).passed  # nothing measured
    summary = json.loads(summary_json([], [], good))
    assert summary["memory"] == {"files": 3, "answered": 3, "failed": 0, "worker_restarts": 0,
                                 "max_worker_rss_mb": 612.5, "limit_mb": WORKER_RSS_LIMIT_MB}  # fmt: skip
    assert "memory" not in json.loads(summary_json([], []))
    table = memory_table(MemoryResult(rows=[("a.png", "too_large: 9 Gpx", ""), ("b.mp4", "csv []", "no face")]))
    assert [line.split()[:2] for line in table.splitlines()[2:]] == [["a.png", "ok"], ["b.mp4", "FAILED:"]]


def test_hostile_answers_are_judged_by_what_each_case_accepts() -> None:
    cases = {case.name: case for case in hostile_media.CASES}
    people = ["mr_bean"]
    assert hostile_media.judge(cases["png-1bit-900mpx.png"], "too_large", "900 Mpx", people) is None
    assert "accepted: too_large" in hostile_media.judge(cases["png-1bit-900mpx.png"], "csv", [], people)
    assert hostile_media.judge(cases["png-named.mp4"], "csv", ["mr_bean"], people) is None
    assert hostile_media.judge(cases["png-named.mp4"], "csv", [], people) is not None
    assert hostile_media.judge(cases["png-rgba-64mpx.png"], "csv", [], people) is None  # decoded within bounds
    assert hostile_media.judge(cases["png-rgba-64mpx.png"], "csv", ["mr_bean"], people) is not None
    assert hostile_media.judge(cases["hls-playlist.mp4"], "unreadable", "not a format", people) is None
    assert hostile_media.judge(cases["hls-playlist.mp4"], "csv", ["mr_bean"], people) is not None
    assert hostile_media.judge(cases["hls-playlist.mp4"], "timeout", "", people) is not None
    assert len(cases) == len(hostile_media.CASES)  # names are unique: they are the keys uploaded

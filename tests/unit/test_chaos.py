"""The chaos run's arithmetic on the function workers' metrics, the memory and poison
scenarios' judgements, the report's counts, the kinds of bad input, the known-faces cases
and the runner's poison hook (the rest runs on real stacks: tests/integration/test_faults.py
and test_bad_input.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from facepipe_tools import hostile_media
from facepipe_tools.chaos import (
    CHAOS_ENV,
    WORKER_RSS_LIMIT_MB,
    CaseResult,
    Clip,
    MemoryResult,
    PoisonResult,
    RssSampler,
    ScenarioResult,
    bad_input_cases,
    interleave,
    memory_table,
    poison_line,
    recognitions_between,
    scenario_table,
    summary_json,
    vmhwm_mb,
)
from facepipe_tools.chaos.cases import known_faces_case, run_convert_cli
from facepipe_tools.chaos.scenarios import judge_answer
from facepipe_tools.chaos.stack import IMAGES, POISON_MARK
from facepipe_tools.function_runner import POISON_KEYS_ENV, poisoned
from facepipe_tools.mapping import ImageEntry
from facepipe_tools.metrics_client import Samples, parse
from facepipe_tools.paths import DATA_DIR


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


# ----------------------------------------------------------------------------- the kinds of bad input


def test_make_chaos_tries_at_least_fifty_kinds_of_bad_input_of_every_class() -> None:
    cases = bad_input_cases()
    names = [case.name for case in cases]
    assert len(set(names)) == len(names)
    assert len(cases) + len(hostile_media.CASES) >= 50
    for prefix in ("key-", "notification", "function-records-", "web-", "known-faces-", "image-"):
        assert any(name.startswith(prefix) for name in names), prefix
    assert any(case.kind == IMAGES and case.expect[0] == "error" for case in cases if case.key)  # type: ignore[index]
    assert {"hls-playlist.mp4", "ffconcat.mp4", "session.sdp"} <= {case.name for case in hostile_media.CASES}


def test_the_counts_are_kinds_of_bad_input_not_the_checks_after_them() -> None:
    bad = [
        CaseResult("empty-object", "", True),
        CaseResult("web-cross-origin", "", False, "HTTP 200"),
        CaseResult("still-serving", "", True, check=True),
        CaseResult("no-leftovers", "", False, "temp files", check=True),
    ]
    memory = MemoryResult(files=42, answered=42, failed=["a.png: no answer"], max_worker_rss_mb=500)
    summary = json.loads(summary_json([], bad, memory))
    assert (summary["bad_inputs_tried"], summary["bad_inputs_failed"], summary["checks_failed"]) == (44, 2, 1)
    assert json.loads(summary_json([], bad))["bad_inputs_tried"] == 2


def test_known_faces_files_are_refused_by_the_convert_cli(tmp_path: Path) -> None:
    """Two of the hostile known-faces files through the real CLI (each case is a process)."""
    ctx = SimpleNamespace(media_dir=tmp_path)
    for name in ("code-exec", "huge-bytes"):
        assert known_faces_case(name)(ctx) is None, name  # type: ignore[arg-type]
    assert not list((tmp_path / "known-faces").glob("*.ran"))


def test_the_convert_cli_peak_memory_is_its_own_not_its_callers(tmp_path: Path) -> None:
    """Linux keeps the caller's high-water mark across exec; the launcher's fork leaves it behind."""
    import numpy as np

    ballast = np.ones(64 << 20)  # 512 MiB, every page touched
    code, stderr, peak_kib = run_convert_cli(DATA_DIR / "known_faces.json", tmp_path / "out.json")
    assert code == 0, stderr
    assert 0 < peak_kib < 256 * 1024 < ballast.nbytes >> 10
    assert (tmp_path / "out.json").is_file()


# ----------------------------------------------------------------------------- images and the poison object


def test_photos_are_spread_among_the_clips_and_judged_by_their_labels() -> None:
    clips = [Clip(f"v{i}.mp4", Path("v.mp4")) for i in range(6)]
    photos = [Clip(f"p{i}.jpg", Path("p.jpg"), ImageEntry(f"p{i}.jpg", ("espresso",)), IMAGES) for i in range(3)]
    merged = interleave(clips, photos)
    assert [clip.key for clip in merged] == ["v0.mp4", "v1.mp4", "p0.jpg", "v2.mp4", "v3.mp4", "p1.jpg", "v4.mp4",
                                             "v5.mp4", "p2.jpg"]  # fmt: skip
    assert interleave(clips, []) == clips
    entry = ImageEntry("c.jpg", ("espresso",))
    assert judge_answer(entry, "rank,label,score\n1,espresso,0.9\n2,cup,0.05\n", IMAGES) is None
    assert "not 'espresso'" in (judge_answer(entry, "rank,label,score\n1,cup,0.9\n", IMAGES) or "")
    row = ScenarioResult("baseline", videos=4, images=2, results=6)
    assert row.passed and row.to_json()["images"] == 2
    assert not ScenarioResult("baseline", videos=4, images=2, results=4).passed


def test_the_poison_scenario_passes_only_when_dead_lettered_after_the_attempts() -> None:
    good = PoisonResult(videos=12, answered=12, poison_answer="failed", stamped=True, dead_letter_attempts=3,
                        attempts=3, kills=3, worker_restarts=3, attempts_after=0)  # fmt: skip
    assert good.passed
    assert good.to_json()["dead_lettered"] is True
    assert replace(good, kills=2).passed  # one attempt ended as a timeout instead
    assert not replace(good, attempts=5).passed  # retried beyond the limit
    assert not replace(good, kills=4).passed
    assert not replace(good, kills=0).passed  # never even tried
    assert not replace(good, attempts_after=1).passed  # invoked again after the dead letter
    assert not replace(good, stamped=False).passed  # the reconciler would not take it as the answer
    assert not replace(good, poison_answer="").passed
    assert not replace(good, answered=11).passed
    assert "dead-lettered after 3 failed attempts" in poison_line(good)
    assert json.loads(summary_json([], [], poison=good))["poison"]["attempts"] == 3


def test_the_runner_hook_kills_only_for_poison_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"bucket": "input", "key": "lecture/chaos-poison.mp4"}).encode()
    monkeypatch.delenv(POISON_KEYS_ENV, raising=False)
    assert not poisoned(body)
    monkeypatch.setenv(POISON_KEYS_ENV, f" other-mark ,{POISON_MARK}")
    assert poisoned(body)
    assert not poisoned(json.dumps({"bucket": "input", "key": "lecture/clip.mp4"}).encode())
    assert CHAOS_ENV[POISON_KEYS_ENV] == POISON_MARK

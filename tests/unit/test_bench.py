"""The benchmark's pieces that run quickly: statistics, the report and its JSON line, the
seeds'-way reference on one clip. No timing is asserted."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from facepipe_tools import bench
from facepipe_tools.bench import (
    REQUIRED_KEYS,
    ClassroomRun,
    ClipResult,
    EndToEnd,
    IdleRun,
    WorkerMetrics,
    build_report,
    distinct_files,
    json_line,
    machine_busy_cpu_s,
    peak_rss_mb,
    process_cpu_s,
    seed_style_recognize,
    targets,
    worker_metrics,
)
from facepipe_tools.metrics_client import parse
from facepipe_tools.stats import percentile

REPO_ROOT = Path(__file__).resolve().parents[2]


def clip(name: str, function_s: float, seed_s: float, people: list[str], seed_people: list[str] | None = None):
    return ClipResult(
        path=Path(name),
        digest=name,
        function_s=[function_s, function_s * 2, function_s / 2],
        seed_s=[seed_s] * 3,
        function_cpu_s=[function_s] * 3,
        seed_cpu_s=[seed_s] * 3,
        function_people=people,
        seed_people=people if seed_people is None else seed_people,
        correct=True,
    )


def run(workers: int, wall_s: float, correct: int = 4) -> EndToEnd:
    return EndToEnd(
        workers=workers,
        videos=4,
        correct=correct,
        wall_s=wall_s,
        latencies=[0.5, 1.0, 1.5, 2.0],
        quiet_floor_s=0.5,
        latency_source="LastModified",
        function=WorkerMetrics(videos=4, video_s=2.0, compute_s=1.0 * workers),
        problems=[],
        cpu_s={"function workers": 1.5, "rgw": 0.5, "machine": 2.5},
    )


def test_percentile_interpolates_within_the_values() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([4.0, 1.0], 0.95) == pytest.approx(3.85)
    assert percentile([7.0], 0.95) == 7.0
    assert bench.median([1.0, 3.0, 2.0, 10.0]) == 2.5
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0, 2.0], 0.955)


def test_distinct_files_keeps_the_first_of_each_content(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    c.write_bytes(b"one")
    assert distinct_files([a, b, c]) == [a, b]


def test_worker_metrics_reads_videos_and_compute() -> None:
    text = "\n".join(
        [
            "# HELP facerec_video_seconds Time to process one video",
            "# TYPE facerec_video_seconds histogram",
            'facerec_video_seconds_bucket{le="0.5"} 3.0',
            'facerec_video_seconds_bucket{le="+Inf"} 4.0',
            "facerec_video_seconds_count 4.0",
            "facerec_video_seconds_sum 2.5",
            "# TYPE facerec_stage_seconds histogram",
            'facerec_stage_seconds_sum{stage="decode"} 0.25',
            'facerec_stage_seconds_sum{stage="detect"} 1.5',
            'facerec_stage_seconds_sum{stage="upload"} 0.1',
            "",
        ]
    )
    found = worker_metrics(parse(text))
    assert (found.videos, found.video_s, found.compute_s) == (4.0, 2.5, 1.75)
    assert found.minus(WorkerMetrics(1.0, 0.5, 0.75)) == WorkerMetrics(3.0, 2.0, 1.0)


def test_peak_rss_and_cpu_of_this_process() -> None:
    gone = 2**22 + 12345  # above pid_max: no such process
    assert peak_rss_mb(os.getpid()) > 1
    assert peak_rss_mb(gone) is None
    before = process_cpu_s(os.getpid())
    busy_before = machine_busy_cpu_s()
    sum(i * i for i in range(3_000_000))  # about 0.2 s of CPU
    assert process_cpu_s(os.getpid()) > before
    assert machine_busy_cpu_s() > busy_before
    assert process_cpu_s(gone) is None


def test_report_and_json_line() -> None:
    clips = [clip("a.mp4", 0.1, 1.0, ["ann"]), clip("b.mp4", 0.3, 2.0, ["bob"])]
    runs = {1: run(1, wall_s=4.0), 2: run(2, wall_s=2.0)}
    idle = [IdleRun("a.mp4", 0.3, 0.1, ["ann"], ["ann"]), IdleRun("b.mp4", 0.5, 0.3, ["bob"], ["bob"])]
    report = build_report(clips, runs, 2, idle, rss=[300.0, 350.5], rounds=3)
    report["elapsed_s"] = 1.0
    line = json_line(report)
    assert "\n" not in line
    data = json.loads(line)
    assert list(data)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)
    assert data["function_s_per_video"] == pytest.approx(0.2)
    assert data["seed_style_s_per_video"] == pytest.approx(1.5)
    assert data["speedup_vs_seed"] == pytest.approx(7.5)
    assert data["e2e_videos"] == 4 and data["e2e_correct"] == 4
    assert data["e2e_wall_s"] == 2.0 and data["e2e_floor_s"] == 1.0 and data["e2e_efficiency"] == 0.5
    assert data["e2e_floor_quiet_s"] == 0.5 and data["e2e_efficiency_quiet"] == 0.25
    assert data["e2e_cpu_s"] == {"function workers": 1.5, "rgw": 0.5, "other": 0.5, "total": 2.5}
    assert data["e2e_p50_s"] == 1.25 and data["e2e_p95_s"] == 1.925
    assert data["idle_latency_s"] == pytest.approx(0.4)
    assert data["idle_overhead_s"] == pytest.approx(0.2)
    assert data["rss_mb_per_worker"] == 350.5
    assert data["throughput_1_worker"] == 1.0 and data["throughput_2_workers"] == 2.0
    assert data["ok"] is True and data["problems"] == []
    assert data["targets"] == {
        "speedup_vs_seed": False,
        "e2e_efficiency": False,
        "idle_latency_s": True,
        "rss_mb_per_worker": True,
    }
    out = io.StringIO()
    bench.render(report, clips, runs, idle, Console(file=out, width=200))
    text = out.getvalue()
    assert "quiet efficiency" in text and "CPU during the 2-worker end-to-end run" in text
    assert "function workers" in text and "375" in text  # 1.5 s over 4 videos, in ms per video


def test_report_without_measurements_has_every_key_null() -> None:
    data = json.loads(json_line(build_report([], {}, None, [], [], rounds=3)))
    assert all(data[key] is None for key in REQUIRED_KEYS)
    assert all(target.met is None for target in targets(data))


def test_different_or_wrong_answers_fail_the_run() -> None:
    differ = clip("a.mp4", 0.1, 1.0, ["ann"], seed_people=["bob"])
    report = build_report([differ], {2: run(2, 2.0, correct=3)}, 2, [], [], rounds=1)
    assert report["ok"] is False
    assert report["answers_identical"] is False
    assert any("a.mp4" in problem for problem in report["problems"])
    assert any("3/4 correct" in problem for problem in report["problems"])


def test_the_classroom_clip_is_reported_and_a_missed_person_fails_the_run() -> None:
    found = ClassroomRun("classroom_cse546_clip.mp4", 1.25, 1.2, ["ann", "bob"], ["ann", "bob"])
    report = build_report([], {}, None, [], [], rounds=3, classroom=found)
    assert report["classroom_clip"] == {
        "clip": "classroom_cse546_clip.mp4", "function_s": 1.25, "function_cpu_s": 1.2, "people_found": "2/2",
    }  # fmt: skip
    assert report["ok"] is True
    report["elapsed_s"] = 1.0
    out = io.StringIO()
    bench.render(report, [], {}, [], Console(file=out, width=200))
    assert "classroom clip classroom_cse546_clip.mp4: function 1.250 s" in out.getvalue()
    missed = ClassroomRun("c.mp4", 1.0, 1.0, ["ann"], ["ann", "bob"])
    report = build_report([], {}, None, [], [], rounds=3, classroom=missed)
    assert report["ok"] is False and report["classroom_clip"]["people_found"] == "1/2"


def test_targets_met_and_not_met() -> None:
    good = {
        "speedup_vs_seed": 10.0,
        "e2e_efficiency": 0.9,
        "function_s_per_video": 0.1,
        "idle_latency_s": 0.34,
        "rss_mb_per_worker": 399.0,
    }
    assert all(target.met for target in targets(good))
    bad = dict(good, speedup_vs_seed=9.9, e2e_efficiency=0.8, idle_latency_s=0.36, rss_mb_per_worker=401.0)
    assert not any(target.met for target in targets(bad))


def test_missing_data_fails_with_a_json_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--cse546", str(tmp_path / "nowhere"), "--no-classification"])
    out = capsys.readouterr().out
    assert code == 2
    data = json.loads(out.strip().splitlines()[-1])
    assert data["ok"] is False
    assert any("not found" in problem for problem in data["problems"])


def test_seed_style_reference_on_the_builtin_sample(sample_dir: Path) -> None:
    names = seed_style_recognize(sample_dir / "sample_hopper.mp4", REPO_ROOT / "data" / "known_faces.json")
    assert names == ["grace_hopper"]


def test_seed_style_reference_agrees_with_the_function_on_a_cse546_clip(cse546: Path) -> None:
    from facepipe.faces.task import FaceRecognitionTask

    video = cse546 / "test_cases" / "test_case_1" / "test_0.mp4"
    known = cse546 / "encoding"
    assert seed_style_recognize(video, known) == ["president_trump"]
    task = FaceRecognitionTask(bench.compute_settings(known))
    assert task.compute(video).people == ["president_trump"]

"""The classification bench's pieces that run quickly: the photos it makes, the worker metrics
it reads, its report, targets and JSON. No timing is asserted."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from facepipe_tools import bench, bench_classify
from facepipe_tools.bench import EndToEnd, WorkerMetrics
from facepipe_tools.bench_classify import (
    REQUIRED_KEYS,
    IdleImage,
    Photo,
    build_photos,
    build_report,
    classify_metrics,
    merge,
    targets,
)
from facepipe_tools.metrics_client import parse


def photo(name: str, function_s: float, seed_s: float | None, label: str = "espresso", **kwargs) -> Photo:
    sample = seed_s is not None
    return Photo(
        path=Path(name),
        digest=name,
        sample=sample,
        function_s=[function_s, function_s * 2, function_s / 2],
        seed_s=[seed_s] * 3 if sample else [],
        function_label=label,
        seed_label=kwargs.pop("seed_label", label) if sample else "",
        **kwargs,
    )


def run(workers: int = 2, wall_s: float = 2.0, correct: int = 4, problems: list[str] | None = None) -> EndToEnd:
    return EndToEnd(
        workers=workers,
        videos=4,
        correct=correct,
        wall_s=wall_s,
        latencies=[0.5, 1.0, 1.5, 2.0],
        quiet_floor_s=1.5,
        latency_source="LastModified",
        function=WorkerMetrics(videos=4, video_s=4.0, compute_s=3.6),
        problems=problems or [],
    )


def test_build_photos_makes_distinct_variants_up_to_the_total(tmp_path: Path) -> None:
    photos = build_photos(tmp_path, total=12)
    assert len(photos) == 12
    assert len({p.digest for p in photos}) == 12
    samples = [p for p in photos if p.sample]
    assert len(samples) == len(bench_classify.sample.SAMPLE_IMAGES)
    assert all(p.accepted for p in samples)  # every sample photo is in data/sample_image_mapping
    assert all(p.path.suffix == ".jpg" and not p.sample for p in photos[len(samples) :])


def test_classify_metrics_reads_images_and_compute() -> None:
    text = "\n".join(
        [
            "facerec_video_seconds_count 10.0",
            "facerec_video_seconds_sum 0.8",
            'facerec_stage_seconds_sum{stage="decode"} 0.1',
            'facerec_stage_seconds_sum{stage="classify"} 0.4',
            'facerec_stage_seconds_sum{stage="upload"} 0.2',
            "",
        ]
    )
    assert classify_metrics(parse(text)) == WorkerMetrics(10.0, 0.8, pytest.approx(0.5))


def test_report_figures_and_json() -> None:
    photos = [photo("a.jpg", 0.02, 1.0), photo("b.png", 0.04, 1.2, label="tabby"), photo("v.jpg", 0.03, None)]
    idle = [IdleImage("a.jpg", 0.2, 0.02, "espresso", "espresso"), IdleImage("b.png", 0.3, 0.04, "tabby", "tabby")]
    report = build_report(photos, run(), idle, rss=[180.0, 190.5], rounds=3)
    data = json.loads(json.dumps(report, allow_nan=False))
    assert all(key in data for key in REQUIRED_KEYS)
    assert data["images"] == 3
    assert data["function_ms_per_image"] == pytest.approx(30.0)  # the sample photos only
    assert data["seed_style_ms_per_image"] == pytest.approx(1100.0)
    assert data["speedup_vs_seed"] == pytest.approx(36.7)
    assert data["function_ms_all_images"] == pytest.approx(30.0)
    assert data["e2e_images"] == 4 and data["e2e_correct"] == 4
    assert data["e2e_floor_s"] == pytest.approx(1.8) and data["e2e_efficiency"] == pytest.approx(0.9)
    assert data["e2e_efficiency_quiet"] == pytest.approx(0.75)
    assert data["idle_latency_s"] == pytest.approx(0.25) and data["idle_overhead_s"] == pytest.approx(0.22)
    assert data["rss_mb_per_worker"] == 190.5
    assert data["targets"] == {
        "speedup_vs_seed": True,
        "e2e_efficiency": True,
        "idle_latency_s": True,
        "rss_mb_per_worker": True,
    }
    assert data["ok"] is True and data["problems"] == []
    out = io.StringIO()
    bench_classify.render(report, photos, run(), idle, Console(file=out, width=200))
    text = out.getvalue()
    assert "classification targets" in text and "a.jpg" in text and "quiet efficiency" in text


def test_targets_met_and_not_met() -> None:
    good = {
        "speedup_vs_seed": 10.0,
        "e2e_efficiency": 0.85,
        "function_ms_per_image": 50.0,
        "idle_latency_s": 0.3,
        "rss_mb_per_worker": 250.0,
    }
    assert [t.met for t in targets(good)] == [True, True, True, True]
    bad = dict(good, speedup_vs_seed=9.9, e2e_efficiency=0.84, idle_latency_s=0.31, rss_mb_per_worker=250.1)
    assert [t.met for t in targets(bad)] == [False, False, False, False]
    assert [t.met for t in targets({})] == [None, None, None, None]


def test_different_wrong_or_missing_answers_are_problems() -> None:
    differ = photo("a.jpg", 0.02, 1.0, seed_label="tabby")
    wrong = photo("b.jpg", 0.02, 1.0, correct=False, detail="top label 'tabby' is not 'espresso'")
    idle = [IdleImage("a.jpg", 0.2, 0.02, "tabby", "espresso")]
    report = build_report([differ, wrong], run(correct=3), idle, [], rounds=1)
    assert report["ok"] is False
    assert report["answers_identical"] is False and report["answers_correct"] is False
    problems = " ".join(report["problems"])
    assert "seeds' way 'tabby'" in problems and "b.jpg" in problems
    assert "3/4 correct" in problems and "idle a.jpg" in problems


def test_report_gives_the_stack_cpu_per_image_and_the_cores_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's and the bench's CPU, not the rest of the machine's: the load-independent figure."""
    monkeypatch.setattr(bench_classify.os, "cpu_count", lambda: 2)
    measured = run()
    measured.cpu_s = {"rgw": 0.1, "function workers": 0.2, "bench (uploads, polling)": 0.02, "machine": 5.0}
    report = build_report([photo("a.jpg", 0.02, 1.0)], measured, [], [], rounds=1)
    assert report["e2e_stack_cpu_ms_per_image"] == pytest.approx(80.0)  # 0.32 s over 4 images
    assert report["e2e_cpu_bound_s"] == pytest.approx(0.16)
    assert report["e2e_cpu_s"]["other"] == pytest.approx(4.68)
    out = io.StringIO()
    bench_classify.render(report, [], measured, [], Console(file=out, width=200))
    assert "80 ms CPU per image" in out.getvalue()
    assert "e2e_cpu_bound_s" not in build_report([], run(), [], [], rounds=1)  # no CPU figures measured


def test_report_without_measurements_is_null() -> None:
    report = build_report([], None, [], [], rounds=3)
    assert all(report[key] is None for key in REQUIRED_KEYS)
    assert report["ok"] is True


@pytest.mark.parametrize(
    ("face_code", "face_ok", "code", "ok", "wanted"),
    [
        (0, True, 0, True, 0),
        (0, True, 1, False, 1),
        (1, False, 0, True, 1),
        (2, False, 1, False, 2),
        (1, False, 130, False, 130),
    ],
)
def test_merge_keeps_the_exit_status_meaning(face_code: int, face_ok: bool, code: int, ok: bool, wanted: int) -> None:
    merged, status = merge({"ok": face_ok}, face_code, {"ok": ok}, code)
    assert status == wanted
    assert merged["ok"] is (face_ok and ok)
    assert merged["classification"] == {"ok": ok}


def test_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--no-classification", "--only-classification"])
    parser = argparse.ArgumentParser()
    bench_classify.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.no_classification, args.only_classification, args.image_workers) == (False, False, 2)


def test_only_classification_line_has_both_key_sets(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    section = build_report([], None, [], [], rounds=1)
    monkeypatch.setattr(bench_classify, "run_section", lambda args, say, console: (section, 0))
    code = bench.main(["--only-classification", "--rounds", "1"])
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert list(data)[: len(bench.REQUIRED_KEYS)] == list(bench.REQUIRED_KEYS)
    assert all(data[key] is None for key in bench.REQUIRED_KEYS)
    assert data["classification"] == section
    assert list(section)[: len(REQUIRED_KEYS)] == list(REQUIRED_KEYS)


def test_a_failed_face_part_still_reports_classification(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    section = build_report([], None, [], [], rounds=1)
    monkeypatch.setattr(bench_classify, "run_section", lambda args, say, console: (section, 0))
    code = bench.main(["--cse546", str(tmp_path / "nowhere")])
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 2
    assert data["ok"] is False and any("not found" in problem for problem in data["problems"])
    assert data["classification"]["ok"] is True

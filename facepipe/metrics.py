"""Prometheus metrics of the function (one registry per process)."""

from prometheus_client import Counter, Histogram

STAGES = ("download", "queue", "decode", "detect", "lookup", "upload")

VIDEOS = Counter("facerec_videos", "Videos processed, by outcome", ["outcome"])
STAGE_SECONDS = Histogram(
    "facerec_stage_seconds",
    "Time spent per processing stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
VIDEO_SECONDS = Histogram(
    "facerec_video_seconds",
    "Time to process one video, download to upload",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120),
)
FACES = Counter("facerec_faces", "Faces found, known or unknown", ["kind"])

#: Every answer of the function's invocation route by HTTP status (not /healthz, not /metrics),
#: including the 500 and 503 answers, so errors show on the dashboard.
REQUESTS = Counter("facerec_requests", "Function invocations answered, by HTTP status", ["status"])
for _status in ("200", "400", "404", "422", "500", "503"):
    REQUESTS.labels(_status)  # present at 0 from the start: rate() works from the first error

"""Prometheus metrics of the function (one registry per process).

Every known label value of a labelled metric is created at import, at 0: a series that only
appears with its first error would leave the dashboard's error panels empty (and a rate
undefined) until then."""

from prometheus_client import Counter, Gauge, Histogram

STAGES = ("download", "queue", "decode", "detect", "lookup", "classify", "upload")
#: facerec_videos_total's outcomes (facepipe/function.py): a result, an error record, an object
#: answered before (same ETag), a missing object, no computation slot in time.
OUTCOMES = ("ok", "error", "skipped", "not_found", "busy")
FACE_KINDS = ("known", "unknown")
#: The statuses the invocation route answers with (index.py counts every answer).
STATUSES = ("200", "400", "404", "422", "500", "503")

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
#: Requests being answered now, invocations and health checks (what a drain waits for).
REQUESTS_IN_FLIGHT = Gauge("facerec_requests_in_flight", "Requests being answered now (not /metrics)")

for _outcome in OUTCOMES:
    VIDEOS.labels(_outcome)
for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)
for _kind in FACE_KINDS:
    FACES.labels(_kind)
for _status in STATUSES:
    REQUESTS.labels(_status)

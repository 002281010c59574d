"""The notifier: bucket notifications in, function invocations out, and the reconciler.

- `listener`: the HTTP front (`POST /` for RGW's notifications, `/healthz`, `/metrics`);
- `jobs`: the queue, one entry per object key, and its worker threads;
- `invoker`: calls the function through the gateway, with retries and backoff;
- `reconciler`: queues input objects without a current answer, from bucket listings;
- `service`: the four assembled into a `Notifier`;
- `metrics`: the `facerec_notifier_*` Prometheus metrics;
- `setup`: the buckets and the bucket notification (`setup`, `disable`);
- `cli`: `main`, the command line (`setup`, `disable`, `serve`).
"""

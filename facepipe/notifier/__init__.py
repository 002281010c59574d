"""The notifier: bucket notifications in, function invocations out (each input bucket to the
function its route names, `Settings.routes`), and the reconciler.

- `listener`: the HTTP front (`POST /` for RGW's notifications, `/healthz`, `/metrics`);
- `jobs`: the queue, one entry per object, worker threads and a suspect lane for each function;
- `invoker`: calls the function through the gateway, with retries and backoff;
- `deadletter`: counts failed attempts per object version and writes the `failed` record;
- `reconciler`: queues input objects without a current answer, from bucket listings;
- `service`: all of them assembled into a `Notifier`;
- `metrics`: the `facerec_notifier_*` Prometheus metrics;
- `setup`: every route's buckets, topic and bucket notification (`setup`, `disable`);
- `cli`: `main`, the command line (`setup`, `disable`, `serve`).
"""

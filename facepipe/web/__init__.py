"""The web tier: POST a picture or video, get back who is in it; POST a photo, get back what it
shows; browse every result.

    POST /                 multipart field `inputFile`: stores the file in the input bucket under
                           `web/<random id>/<file name>`, waits until the pipeline (bucket
                           notification -> notifier -> function) has written the result or the
                           error record, and answers `<file stem>:<name>[,<name>...]` as plain
                           text, or the whole result as JSON (`Accept: application/json`).
    GET  /result/<key>     the same answer for an input key (e.g. after a 202 timeout answer)
    POST /classify         the same for image classification (field `inputFile`, or `myfile`):
                           IMAGE_INPUT_BUCKET -> IMAGE_OUTPUT_BUCKET, answer `<file stem>:<label>`
                           (the top ImageNet class), or the top five as JSON
    GET  /classify/result/<key>  its answer for an input key
    GET  /results          every processed video and classified image, newest first, with their
                           pictures, refreshing
    GET  /results.json     the same as JSON; /results/rows the tables the page refreshes with
    GET  /picture/<key>    a `<stem>.jpg` picture from the output bucket
    GET  /classify/picture/<key>  a `<stem>.jpg` picture from the image output bucket
    GET  /healthz          liveness

The web tier never calls a function: it only writes to an input bucket and reads the output
bucket, so a web upload goes through exactly the path every other upload takes.
Every upload gets its own key, so concurrent users sending files with the same name never
see each other's answers, and a stale result of an older upload is never taken for a new one.

Hostile clients: an upload is read as a stream (`formdata`): its type is decided by its first
bytes, before the server has written anything to disk, and its size is counted as it arrives;
the server (`server`, waitress) checks the size, the token and the origin on the headers and
the type on the first bytes, so refused bodies are never held; the body is held once and the
file streamed from it to S3. With WEB_TOKEN set, everything but /healthz, /metrics and the
static files needs it (`access`); a POST from another site's page is refused (403).

Modules: `app` (the `create_app` factory), one Blueprint each in `upload` (faces), `classify`
(images), `results` and `pictures`; `intake` (what both upload routes share: storing, waiting,
answering), `formdata` (the upload read as a stream), `access` (token and origin), `server`
(waitress with the early checks), `services` (what the views share), `responses` (answers in
text or JSON), `store` (an output bucket), `media_types` (what an uploaded file is),
`settings`, `cli`.
"""

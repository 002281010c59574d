"""The web tier under waitress on loopback (real HTTP, moto S3, the fake pipeline of
tests/unit/webfake.py): wrong types refused before anything is spooled, bodies held once,
the size limit enforced while the body arrives, the spool budget, the token, the origin
check, the connection limits, and the refusal to listen off loopback without a token."""

from __future__ import annotations

import base64
import itertools
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY

from facepipe.settings import Settings
from facepipe.web import cli
from facepipe.web.app import create_app
from facepipe.web.server import make_server
from facepipe.web.settings import WebSettings
from facepipe_tools.polling import wait_for
from tests.unit.webfake import FakePipeline, media
from tests.unit.webserver import Served, serving

LIMIT = 1_000_000  # WEB_MAX_UPLOAD_BYTES of these servers; the body may be 64 KiB more
SETTINGS = Settings(input_bucket="input", output_bucket="output", max_object_bytes=LIMIT)
BOUNDARY = "facepipeboundary"
TOKEN = "s3cr3t-t0ken"


@pytest.fixture
def serve(s3, tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """Start the web tier under waitress on loopback with WebSettings `**web` (see webserver.py)."""
    numbers = itertools.count()
    with ExitStack() as stack:

        def start(**web) -> Served:
            spool = tmp_path / f"spool{next(numbers)}"
            spool.mkdir()
            return stack.enter_context(serving(s3, SETTINGS, spool, **web))

        yield start


@pytest.fixture
def pipeline(s3) -> Iterator[FakePipeline]:
    with FakePipeline(s3) as fake:
        yield fake


@pytest.fixture
def temp_files(monkeypatch) -> list[str]:
    """Every temporary file the process creates from now on, by the tempfile function used
    (except moto's: it keeps the objects "in S3" in temporary files)."""
    made: list[str] = []
    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp"):
        real = getattr(tempfile, name)

        def record(*args, _real=real, _name=name, **kwargs):
            if not sys._getframe(1).f_globals.get("__name__", "").startswith("moto."):
                made.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(tempfile, name, record)
    return made


def spool_files() -> float:
    return REGISTRY.get_sample_value("facepipe_web_spool_files_total") or 0.0


def input_keys(s3) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket="input").get("Contents", [])]


def multipart_head(name: str, field: str = "inputFile") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def multipart_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(port: int, length: int | None, path: str = "/", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: application/json"]
    lines.append(f"Content-Type: multipart/form-data; boundary={BOUNDARY}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one response (Content-Length framed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def connect(server: Served) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    return sock


# ------------------------------------------------------------------------------ type, spool, size


def test_wrong_type_is_refused_from_its_first_bytes_before_anything_is_spooled(
    serve, s3, temp_files: list[str]
) -> None:
    """A 900 kB text file named like a video: 415 after its first 64 KiB were sent, with the
    rest never read, and not one temporary file made."""
    server = serve()
    before = spool_files()
    text = (b"just some notes, not a video at all\n" * 30_000)[:900_000]
    body = multipart_head("clip.mp4") + text + multipart_tail()
    with connect(server) as sock:
        sock.sendall(request_head(server.port, len(body)) + body[:65536])
        status, headers, answer = read_response(sock)  # answered with most of the body unsent
        assert status == 415, answer
        assert b"holds text" in answer and b'"status":"rejected"' in answer.replace(b" ", b"")
        assert headers["connection"] == "close"
        # The rest of the body is read and dropped (not kept) and the connection closed in
        # order: a client that sends all of its body before it reads still reads the answer.
        sock.sendall(body[65536:])
        assert sock.recv(1) == b""  # an orderly close, not a reset
    assert temp_files == []
    assert spool_files() == before
    assert list(server.spool_dir.iterdir()) == []
    assert input_keys(s3) == []


def test_a_client_that_sends_its_whole_body_first_still_reads_the_refusal(serve, s3, temp_files) -> None:
    """requests sends all of a body before it reads: it gets the 415 (or the 401), not an
    error, and nothing of the body is kept."""
    server = serve()
    text = b"plain text named like a video\n" * 30_000  # 900 kB, under the limit
    response = requests.post(server.url, files={"inputFile": ("clip.mp4", text)}, timeout=60)
    assert response.status_code == 415 and "holds text" in response.text
    unauthorised = serve(token=TOKEN)
    response = requests.post(unauthorised.url, files={"inputFile": ("clip.mp4", text)}, timeout=60)
    assert response.status_code == 401
    assert temp_files == [] and input_keys(s3) == []


def test_a_wrong_type_of_a_few_bytes_is_refused_over_http_too(serve, s3) -> None:
    server = serve()
    for name, data in (("notes.txt", b"hello\n"), ("archive.zip", b"PK\x03\x04" + bytes(2000))):
        response = requests.post(server.url, files={"inputFile": (name, data)}, timeout=30)
        assert response.status_code == 415, response.text
    assert input_keys(s3) == []


def test_a_large_upload_is_held_once_and_streamed_to_s3(serve, pipeline, s3, temp_files: list[str]) -> None:
    """900 kB (over waitress's 512 KiB in memory): one spool file, no other temporary file
    (no second copy), and the stored object is the file."""
    server = serve()
    before = spool_files()
    data = media("people=grace_hopper") + bytes(range(256)) * 3500
    response = requests.post(server.url, files={"inputFile": ("big.mp4", data)}, timeout=60)
    assert (response.status_code, response.text) == (200, "big:grace_hopper")
    assert spool_files() == before + 1
    assert temp_files == ["TemporaryFile"]
    [key] = input_keys(s3)
    assert s3.get_object(Bucket="input", Key=key)["Body"].read() == data


def test_a_declared_length_over_the_limit_is_refused_before_the_body(serve, s3) -> None:
    server = serve()
    with connect(server) as sock:
        sock.sendall(request_head(server.port, LIMIT + 70_000))  # headers only
        status, _, answer = read_response(sock)
        assert status == 413 and f"limit of {LIMIT} bytes".encode() in answer
    assert input_keys(s3) == []


def test_a_file_over_the_limit_in_a_body_within_it_is_refused_at_the_byte_past_the_limit(serve, s3) -> None:
    """The body's length is within the limit and its framing, the file's is not: 413 once
    the file's bytes pass the limit, with the end of the body never sent."""
    server = serve()
    file = media("people=x") + bytes(LIMIT + 10_000)
    body = multipart_head("big.mp4") + file + multipart_tail()
    assert len(body) < LIMIT + 64 * 1024
    sent = len(multipart_head("big.mp4")) + LIMIT + 100  # just past the limit
    with connect(server) as sock:
        sock.sendall(request_head(server.port, len(body)) + body[:sent])
        status, _, answer = read_response(sock)
    assert status == 413 and f"the limit is {LIMIT} bytes".encode() in answer, answer
    assert input_keys(s3) == []


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(serve, s3) -> None:
    """No length announced: the server counts while the chunks arrive and answers 413 as soon
    as the limit is passed; the client has more to send but the answer is already there."""
    server = serve()
    chunk = b"\x00" * 32768
    with connect(server) as sock:
        first = multipart_head("big.mp4") + media("people=x")
        sock.sendall(request_head(server.port, None) + b"%x\r\n%s\r\n" % (len(first), first))
        sent = len(first)
        sock.settimeout(0.05)
        answered = False
        while sent < 3 * LIMIT and not answered:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except ConnectionError:
                break
            try:
                answered = bool(sock.recv(1, socket.MSG_PEEK))
            except TimeoutError:
                pass
        sock.settimeout(30)
        assert sent < 3 * LIMIT  # the server answered (or closed) long before the end
        status, _, answer = read_response(sock)
    assert status == 413 and f"the limit is {LIMIT} bytes".encode() in answer
    assert sent > LIMIT  # it was the limit that stopped it, not something else
    assert input_keys(s3) == []


def test_spool_budget_refuses_uploads_beyond_it_with_503(serve, pipeline, s3) -> None:
    """While one 600 kB upload is arriving, a second one would pass the budget: 503 with
    Retry-After at once; once the first is done, uploads are taken again."""
    server = serve(spool_limit_bytes=1_000_000)
    data = media("people=grace_hopper") + bytes(600_000)
    body = multipart_head("first.mp4") + data + multipart_tail()
    with connect(server) as first:
        first.sendall(request_head(server.port, len(body)) + body[:1000])  # holds its share
        with connect(server) as second:
            second.sendall(request_head(server.port, len(body)))
            status, headers, answer = read_response(second)
            assert status == 503 and headers["retry-after"] == "5", answer
        first.sendall(body[1000:])
        status, _, answer = read_response(first)
        assert status == 200, answer
    response = requests.post(server.url, files={"inputFile": ("again.mp4", data)}, timeout=60)
    assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------ token and origin


def test_token_is_needed_for_uploads_and_results_not_for_probes(serve, pipeline, s3) -> None:
    server = serve(token=TOKEN)
    url = server.url
    for path in ("", "results", "results.json", "results/rows", "result/web/x/a.mp4", "picture/a.jpg"):
        response = requests.get(url + path, timeout=30)
        assert response.status_code == 401, path
        assert "Bearer" in response.headers["WWW-Authenticate"]
    for path in ("healthz", "metrics", "static/style.css"):
        assert requests.get(url + path, timeout=30).status_code == 200, path
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert requests.get(url + "results.json", headers=bearer, timeout=30).status_code == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert requests.get(url + "results", headers={"Authorization": f"Basic {basic}"}, timeout=30).status_code == 200
    wrong = {"Authorization": "Bearer not-the-token"}
    assert requests.get(url + "results.json", headers=wrong, timeout=30).status_code == 401
    upload = {"inputFile": ("clip.mp4", media("people=grace_hopper"))}
    assert requests.post(url, files=upload, timeout=30).status_code == 401
    assert input_keys(s3) == []
    answer = requests.post(url, files=upload, headers=bearer, timeout=30)
    assert (answer.status_code, answer.text) == (200, "clip:grace_hopper")


def test_an_upload_without_the_token_is_refused_before_its_body(serve, s3, temp_files: list[str]) -> None:
    server = serve(token=TOKEN)
    with connect(server) as sock:
        sock.sendall(request_head(server.port, 900_000))  # headers only: the answer comes anyway
        status, headers, answer = read_response(sock)
    assert status == 401 and "Bearer" in headers["www-authenticate"], answer
    assert temp_files == []


def test_cross_origin_posts_are_refused(serve, pipeline, s3) -> None:
    server = serve(allowed_origins=("https://app.example.org",))
    upload = {"inputFile": ("clip.mp4", media("people=grace_hopper"))}
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page.html"},
        {"Origin": f"http://127.0.0.1:{server.port + 1}"},  # another port is another origin
    ):
        response = requests.post(server.url, files=upload, headers=headers, timeout=30)
        assert response.status_code == 403, headers
        assert "cross-origin" in response.text
    assert input_keys(s3) == []
    for headers in (
        {},  # curl, scripts, workload.py
        {"Origin": f"http://127.0.0.1:{server.port}"},  # the upload form
        {"Referer": f"http://127.0.0.1:{server.port}/"},
        {"Origin": "https://app.example.org"},  # WEB_ALLOWED_ORIGINS
    ):
        response = requests.post(server.url, files=upload, headers=headers, timeout=30)
        assert (response.status_code, response.text) == (200, "clip:grace_hopper"), headers
    # Reading is not a cross-origin risk the check is for (the browser keeps the answer from the page).
    assert requests.get(server.url + "results.json", headers={"Origin": "http://evil.example"}).status_code == 200


# ------------------------------------------------------------------------------ connections


def test_connection_limit_and_channel_timeout_reach_waitress(s3, tmp_path: Path) -> None:
    web = WebSettings(connection_limit=7, channel_timeout_s=9, spool_dir=str(tmp_path))
    server = make_server(create_app(SETTINGS, web, s3=s3), "127.0.0.1", 0, web)
    try:
        assert (server.adj.connection_limit, server.adj.channel_timeout) == (7, 9)
        assert server.adj.cleanup_interval <= 9
        assert server.adj.max_request_body_size == LIMIT + 64 * 1024 + 1
    finally:
        server.close()
    auto = WebSettings(threads=64)
    assert 16 <= auto.effective_connection_limit() <= 256


def test_a_stalled_client_is_disconnected_after_the_channel_timeout(serve) -> None:
    server = serve(channel_timeout_s=1)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        sock.settimeout(0.2)
        assert wait_for(lambda: closed_by_server(sock), timeout_s=20)
    assert requests.get(server.url + "healthz", timeout=30).status_code == 200


# ------------------------------------------------------------------------------ startup


@pytest.fixture
def cli_env(monkeypatch, tmp_path: Path) -> list[tuple[str, int]]:
    """The environment of web/app.py, with the server replaced by a recorder of (host, port)."""
    monkeypatch.setenv("FACEPIPE_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("WEB_TOKEN", raising=False)
    started: list[tuple[str, int]] = []

    class Recorder:
        def __init__(self, host: str, port: int) -> None:
            self.where = (host, port)

        def run(self) -> None:
            started.append(self.where)

    monkeypatch.setattr(cli, "make_server", lambda app, host, port, web: Recorder(host, port))
    return started


def test_listening_off_loopback_needs_a_token(cli_env, monkeypatch, tmp_path: Path, capsys) -> None:
    for host in ("0.0.0.0", "::", "10.1.2.3", "web.example.org"):
        assert cli.main(["--host", host, "--port", "8000"]) == 2
        assert "set WEB_TOKEN" in capsys.readouterr().err
    assert cli_env == []
    assert cli.main(["--host", "127.0.0.1", "--port", "8000"]) == 0
    assert cli.main(["--host", "localhost", "--port", "8000"]) == 0
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "web-token").write_text(TOKEN + "\n")  # the secret file, as for the other secrets
    assert cli.main(["--host", "0.0.0.0", "--port", "8000"]) == 0
    assert cli_env == [("127.0.0.1", 8000), ("localhost", 8000), ("0.0.0.0", 8000)]

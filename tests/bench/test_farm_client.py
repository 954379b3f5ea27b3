"""The farm benchmark's clients count every error answer, the ones `requests` retried by itself and
gave up on included (the servers measured keep no access log)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bench import farm_client


class Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500 if self.path == "/broken" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(farm_client, "_http", {"4xx": 0, "5xx": 0, "lost": 0})


def test_retried_500s_are_counted_also_when_the_retries_run_out(server: str) -> None:
    session = farm_client.session_like_client(server)
    session.get_adapter(server).max_retries.backoff_factor = 0  # type: ignore[attr-defined]
    with pytest.raises(requests.exceptions.RetryError):
        session.get(server + "broken")  # answered 500 eleven times (ten retries), then given up
    assert farm_client._http == {"4xx": 0, "5xx": 11, "lost": 0}
    assert session.post(server + "broken").status_code == 500  # POST: not retried
    assert session.get(server + "missing").status_code == 404
    assert farm_client._http == {"4xx": 1, "5xx": 12, "lost": 0}


def test_an_attempt_without_an_answer_is_counted_as_lost() -> None:
    session = farm_client.session_like_client("http://127.0.0.1:9/")
    session.get_adapter("http://127.0.0.1:9/").max_retries.backoff_factor = 0  # type: ignore[attr-defined]
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get("http://127.0.0.1:9/nothing-listens-here")
    assert farm_client._http["lost"] == 11 and farm_client._http["5xx"] == 0

"""`thoth-nb holds|approve|deny --api-url` when the server is down, the URL is malformed, the key is
refused or the URL is some other web server: one line on stderr and exit 1, not an httpx traceback."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from thoth_nb.cli import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _NotThoth(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status = 401 if self.path.startswith("/v1/approvals?") and "Authorization" not in self.headers else 200
        body = b"<html>a login page</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_thoth() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotThoth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("argv", [["holds"], ["approve", "apr_x"], ["deny", "apr_x"]])
def test_a_server_that_is_down_or_misspelled_is_one_line(argv: list[str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for url in (f"http://127.0.0.1:{_closed_port()}", "127.0.0.1:8787"):
        assert main([*argv, "--api-url", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("thoth-nb: ") and "cannot reach" in err and len(err.strip().splitlines()) == 1


def test_another_web_server_or_a_refused_key_is_one_line(not_thoth: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["holds", "--api-url", not_thoth]) == 1
    assert "status=401" in capsys.readouterr().err
    assert main(["holds", "--api-url", not_thoth, "--api-key", "thk_x"]) == 1
    assert "without JSON" in capsys.readouterr().err
    assert main(["approve", "apr_x", "--api-url", not_thoth]) == 1
    assert "without JSON" in capsys.readouterr().err

"""A device web server that serves one connection at a time (Python's single-threaded
``http.server``, as many embedded servers are) is identified, and its default credentials
are found: the probes of one port must not all wait on each other."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from iotsec.app import scan as scan_app
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from tests.ports import free_port
from tests.scan import servers as srv
from tests.scan.conftest import fast_options

# A real separate process: HTTPServer (not ThreadingHTTPServer) handles one connection at a
# time and blocks reading the request line of whichever connection it accepted first.
SERVER = textwrap.dedent("""
    import base64, http.server, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            good = "Basic " + base64.b64encode(b"admin:admin").decode()
            if self.headers.get("Authorization") == good:
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"camera settings")
                return
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="IP Camera"')
            self.end_headers()
            self.wfile.write(b"denied")

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


@pytest.fixture
def one_connection_server() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        srv.wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_single_threaded_http_is_identified_and_its_default_password_found(
        rt: Runtime, one_connection_server: int) -> None:
    port = one_connection_server
    request = scan_app.ScanRequest(targets=[srv.HOST], ports=str(port),
                                   options=fast_options())
    result = scan_app.scan(request, rt=rt)
    [service] = result.services
    assert service.name == "http", service.notes
    assert service.details.get("status") == 401
    hits = [f for f in result.findings if f.rule.id == "credentials/default"]
    assert len(hits) == 1, [f.key for f in result.findings]
    evidence = hits[0].evidence_dict()
    assert (evidence["username"], evidence["password"]) == ("admin", "admin")
    # The scan is an event of the home's chain: its counts, never a finding's details.
    rt.events.flush()
    (run,) = list_events(rt.engine, kind="scan.run")
    assert run.detail == {"hosts": 1, "services": 1, "findings": len(result.findings)}
    assert "admin" not in json.dumps(run.detail)

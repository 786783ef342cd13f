"""An OpenAI-compatible chat server on loopback whose replies a test decides (label explainers
and judges without a real model)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer


@contextmanager
def stub_llm_server(reply: Callable[[str], str]) -> Iterator[tuple[str, list[str]]]:
    """(the server's /v1 URL, the paths asked so far); ``reply(prompt)`` answers each chat."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(self.path)
            data = json.dumps({"choices": [{"message": {
                "content": reply(body["messages"][0]["content"])}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()

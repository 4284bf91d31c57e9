"""A small HTTP server on 127.0.0.1 for download tests: ranges, truncation and request records."""

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        files, truncated = self.server.files, self.server.truncated
        self.server.requests.append((self.path, self.headers.get("Range")))
        if self.path not in files:
            self.send_error(404, "Not Found")
            return
        body, start = files[self.path], 0
        byte_range = self.headers.get("Range")
        if byte_range:
            start = int(byte_range.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.path in truncated:
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)
        self.wfile.flush()
        if self.path in truncated:
            self.close_connection = True


@contextlib.contextmanager
def serve(files: dict, truncated=()):
    """Serve `files` ({'/path': bytes}); paths in `truncated` send half the body and hang up."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.truncated, server.requests = files, set(truncated), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url(path="/file"):
    """A URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"

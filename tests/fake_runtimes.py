"""Runtimes that misbehave in ways no real runtime can be made to: a CRI endpoint (a real gRPC server)
whose answers the test writes byte for byte, and an Engine API (a real HTTP server on a unix socket)
whose JSON the test writes. Each serves until the test ends."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc

from exporter.sources.runtimes import cri_api
from exporter.sources.runtimes.proto import cri_pb2, events_pb2

GARBAGE = b"\xff\xff\xff\xff"  # no protobuf message: a varint that never ends


def version_answer(name: str = "containerd") -> bytes:
    return cri_pb2.VersionResponse(
        version="0.1.0", runtime_name=name, runtime_version="1.6.20", runtime_api_version="v1"
    ).SerializeToString()


def task_start(container_id: str) -> bytes:
    """One containerd /tasks/start envelope, as its events service streams it."""
    envelope = events_pb2.Envelope(namespace="k8s.io", topic="/tasks/start")
    envelope.timestamp.FromSeconds(int(time.time()))
    envelope.event.value = events_pb2.EventId(id=container_id).SerializeToString()
    return envelope.SerializeToString()


class FakeCri:
    """A gRPC server on a unix socket. `unary` maps a RuntimeService method's name to a function of
    the raw request giving the raw answer; `streams` maps a full method path to a function giving
    raw messages. Anything else is UNIMPLEMENTED, as on a real runtime."""

    def __init__(
        self,
        path: str,
        unary: dict[str, Callable[[bytes], bytes]],
        streams: dict[str, Callable[[], Iterator[bytes]]] | None = None,
    ) -> None:
        self.path = path
        handlers = {cri_api.RUNTIME_SERVICE + m: f for m, f in unary.items()}
        stream_handlers = dict(streams or {})

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                if details.method in stream_handlers:
                    make = stream_handlers[details.method]
                    return grpc.unary_stream_rpc_method_handler(lambda _req, _ctx: make())
                if details.method in handlers:
                    answer = handlers[details.method]
                    return grpc.unary_unary_rpc_method_handler(lambda req, _ctx: answer(req))
                return None

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        self._server.add_generic_rpc_handlers((Handler(),))
        self._server.add_insecure_port(f"unix:{path}")

    def start(self) -> FakeCri:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0)


class FakeEngine:
    """An Engine API on a unix socket: `routes` maps a path (without the version prefix and query)
    to the JSON document it answers; /_ping answers OK; /events stays open and sends nothing."""

    def __init__(self, path: str, routes: dict[str, Any]) -> None:
        self.path = path
        released = self.released = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def address_string(self) -> str:
                return "fake"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path.endswith("/_ping"):
                    self._answer(b"OK", "text/plain")
                elif path.endswith("/events"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    released.wait(120)
                elif path in routes:
                    self._answer(json.dumps(routes[path]).encode(), "application/json")
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def _answer(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self._server = Server(path, Handler)

    def start(self) -> FakeEngine:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.shutdown()
        self._server.server_close()

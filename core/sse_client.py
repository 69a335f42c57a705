"""A minimal Server-Sent Events client (tests and the latency benchmark): reads a stream in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import urllib3


class StreamReader:
    def __init__(self, url: str, headers: dict[str, str]):
        self.events: list[dict[str, str]] = []
        self.received_at: list[float] = []  # time.time() of each event, for latency
        self.comments: list[str] = []
        self.directives: list[dict[str, str]] = []  # fields without data ("retry: 3000", the first message)
        self.ended = threading.Event()  # the server closed the stream
        self.response = urllib3.PoolManager().request(
            "GET", url, headers=headers, preload_content=False, timeout=urllib3.Timeout(connect=5, read=60)
        )
        self.status = self.response.status
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _lines(self):
        buffer = b""
        for chunk in self.response.stream(4096, decode_content=True):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line.decode()

    def _read(self):
        event: dict[str, str] = {}
        try:
            for line in self._lines():
                if not line:
                    if "data" in event:  # not the opening "retry:" directive
                        self.received_at.append(time.time())
                        self.events.append(event)
                    elif event:
                        self.directives.append(event)
                    event = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    name, _, value = line.partition(": ")
                    event[name] = value
        except Exception:  # noqa: BLE001 - closed by the caller
            pass
        finally:
            self.ended.set()

    def close(self):
        # Shut the socket down first: closing the response alone waits for the reading thread's
        # pending read (up to the next heartbeat).
        sock = getattr(self.response.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.thread.join(timeout=5)

"""A loopback HTTP server that receives apprise ``json://`` posts, for the alert tests and the
latency bench: it records each post (path, JSON body, arrival time) and answers as told (200,
an error status, slowly for some titles, or never)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    body: dict[str, Any]
    at_ns: int

    @property
    def title(self) -> str:
        return str(self.body.get("title", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


class Hook:
    """``status``: the answer; ``hang``: never answer (until ``close``); ``delay_for``: seconds
    to wait before answering a post, by its title."""

    def __init__(
        self,
        status: int = 200,
        *,
        hang: bool = False,
        delay_for: Callable[[str], float] | None = None,
    ) -> None:
        self.status = status
        self.hang = hang
        self.delay_for = delay_for
        self.posts: list[Post] = []
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                hook.posts.append(Post(self.path, body, time.time_ns()))
                if hook.hang:
                    hook.released.wait(60)
                    return
                delay = hook.delay_for(str(body.get("title", ""))) if hook.delay_for else 0.0
                if delay:
                    hook.released.wait(delay)
                self.send_response(hook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def titles(self) -> list[str]:
        return [p.title for p in list(self.posts)]

    async def wait_for(self, test: Callable[[list[Post]], bool], timeout: float = 10.0) -> bool:
        """Poll until ``test(posts)`` holds or ``timeout`` passes (a bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if test(list(self.posts)):
                return True
            await asyncio.sleep(0.02)
        return test(list(self.posts))

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Hook:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

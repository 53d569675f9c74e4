"""A client of the relay's HTTP API (docs/api.md), asyncio and sync.

    async with AsyncClient("https://relay.example", key=KEY) as relay:
        job = await relay.submit("photo.jpg", "painting:starry_night", epochs=100)
        async for event in relay.events(job["id"]):
            print(event["type"])
        png = await relay.result(job["id"])

    with Client("https://relay.example") as relay:   # the same, blocking
        relay.paint("photo.jpg", "fast:candy", out="painted.png")

Jobs are the relay's JSON views (plain dicts). Events come from the job's WebSocket; if it
cannot be opened, or drops before the job ends, the client polls `GET /api/jobs/{id}`
instead and makes the same events from what changed.
"""

import asyncio
import io
import json
import os
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp

from stylerelay.errors import JobCancelled, JobFailed, Unreachable, api_error

T = TypeVar("T")
Job = dict[str, Any]
"""A job's view as the relay sends it (`GET /api/jobs/{id}`)."""
Event = dict[str, Any]
"""One event of a job: `type` (state, queued, started, progress, preview, done, failed,
cancelled) and its fields (docs/api.md)."""
FINAL = frozenset({"done", "failed", "cancelled"})
Param = str | int | float | bool


class SupportsSave(Protocol):
    """A PIL image, or anything that saves itself to a file object in a format."""

    def save(self, fp: Any, format: str | None = None) -> None: ...


Image = str | os.PathLike[str] | bytes | SupportsSave
"""A photo or style image: a path, the file's bytes, or a PIL image (sent as PNG)."""


def _image(source: Image, default_name: str) -> tuple[bytes, str]:
    """The bytes to upload and a file name for them."""
    if isinstance(source, bytes):
        return source, default_name
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.read_bytes(), path.name
    out = io.BytesIO()
    source.save(out, format="PNG")
    return out.getvalue(), default_name.rsplit(".", 1)[0] + ".png"


def _text(value: Param) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class AsyncClient:
    """The relay's API on aiohttp: submit, watch, wait, download, cancel, delete, styles."""

    def __init__(
        self,
        relay: str,
        *,
        key: str | None = None,
        timeout: float = 300.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.relay = relay.rstrip("/")
        self.poll_interval = poll_interval
        """Seconds between polls when the event socket is not available."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, opened on first use (inside the running loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, **kw: Any) -> tuple[int, bytes, str]:
        try:
            async with self.session.request(method, self.relay + path, **kw) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    try:
                        message = str((await resp.json(content_type=None))["error"])
                    except (ValueError, KeyError, TypeError):
                        message = body.decode("utf-8", "replace")[:200] or str(resp.reason)
                    raise api_error(resp.status, message, _retry_after(resp.headers))
                return resp.status, body, resp.content_type
        except aiohttp.ClientConnectionError as exc:
            raise Unreachable(f"Cannot reach the relay at {self.relay}: {exc}") from exc

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        return json.loads((await self._request(method, path, **kw))[1])

    # ---- the API -------------------------------------------------------------------------

    async def styles(self) -> dict[str, Any]:
        """`GET /api/styles`: the styles, the methods available now, and the limits."""
        result: dict[str, Any] = await self._json("GET", "/api/styles")
        return result

    async def submit(
        self,
        image: Image,
        style: str | Sequence[str] = (),
        *,
        method: str | None = None,
        epochs: int | None = None,
        size: int | None = None,
        style_images: Sequence[Image] = (),
        params: Mapping[str, Param] | None = None,
        filename: str | None = None,
    ) -> Job:
        """Create a job from a photo and style id(s) or style images; return its view."""
        data = aiohttp.FormData()
        content, name = _image(image, "photo.png")
        data.add_field("content", content, filename=name, content_type="application/octet-stream")
        for style_id in [style] if isinstance(style, str) else style:
            data.add_field("style", style_id)
        for i, source in enumerate(style_images):
            raw, raw_name = _image(source, f"style{i}.png")
            data.add_field(
                "style_image", raw, filename=raw_name, content_type="application/octet-stream"
            )
        fields: dict[str, Param | None] = {
            "method": method,
            "epochs": epochs,
            "size": size,
            "filename": filename or name,
            **(params or {}),
        }
        for field, value in fields.items():
            if value is not None:
                data.add_field(field, _text(value))
        job: Job = await self._json("POST", "/api/jobs", data=data)
        return job

    async def job(self, job_id: str) -> Job:
        """`GET /api/jobs/{id}`: the job's view now."""
        job: Job = await self._json("GET", f"/api/jobs/{job_id}")
        return job

    async def events(self, job_id: str, *, websocket: bool = True) -> AsyncGenerator[Event, None]:
        """The job's events until it ends (the last is done, failed or cancelled): from its
        WebSocket, or by polling when the socket fails or `websocket` is False."""
        last: Job | None = None
        if websocket:
            try:
                async for event in self._socket_events(job_id):
                    if event.get("job") is not None:
                        last = event["job"]
                    yield event
                    if event.get("type") in FINAL:
                        return
            except (aiohttp.ClientError, ValueError):
                pass  # no socket, or it dropped: poll from here
        async for event in self._polled_events(job_id, last):
            yield event

    async def _socket_events(self, job_id: str) -> AsyncIterator[Event]:
        url = self.relay + f"/api/jobs/{job_id}/events"
        async with self.session.ws_connect(url, heartbeat=30.0) as ws:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    yield msg.json()
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    break

    async def _polled_events(self, job_id: str, last: Job | None) -> AsyncIterator[Event]:
        while True:
            job = await self.job(job_id)
            if job["state"] in FINAL:
                yield {"type": job["state"], "job": job, "error": job.get("error")}
                return
            if last is None or (job["state"], job["epoch"]) != (last["state"], last["epoch"]):
                if job["epoch"] is not None and job["state"] == "running":
                    # `epochs`, the planned count, was `max_epochs` before issue 12.
                    epochs = job.get("epochs", job.get("max_epochs"))
                    yield {"type": "progress", "epochs": epochs, "epoch": job["epoch"],
                           "losses": job["losses"]}  # fmt: skip
                else:
                    yield {"type": "state", "job": job}
            last = job
            await asyncio.sleep(self.poll_interval)

    async def wait(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> Job:
        """Until the job ends; each event goes to `on_event`. Return the done job's view;
        raise `JobFailed` or `JobCancelled` if it ended otherwise."""
        async for event in self.events(job_id):
            if on_event is not None:
                on_event(event)
            if event.get("type") in FINAL:
                job: Job = event["job"]
                if job["state"] == "failed":
                    raise JobFailed(job)
                if job["state"] == "cancelled":
                    raise JobCancelled(job)
                return job
        return await self.job(job_id)  # pragma: no cover - events always end with FINAL

    async def result(self, job_id: str) -> bytes:
        """The result PNG of a done job."""
        return (await self._request("GET", f"/api/jobs/{job_id}/result"))[1]

    async def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """Write the result PNG to `path`; return it."""
        out = Path(path)
        out.write_bytes(await self.result(job_id))
        return out

    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job; return its view (409 if it had ended)."""
        job: Job = await self._json("DELETE", f"/api/jobs/{job_id}")
        return job

    async def delete(self, job_id: str) -> None:
        """Delete an ended job and its images now (cancels it first if it had not ended)."""
        status, _, _ = await self._request("DELETE", f"/api/jobs/{job_id}")
        if status == 200:  # it was still open: now cancelled; delete it for good
            await self._request("DELETE", f"/api/jobs/{job_id}")

    async def paint(
        self,
        image: Image,
        style: str | Sequence[str] = (),
        *,
        out: str | os.PathLike[str] | None = None,
        on_event: Callable[[Event], None] | None = None,
        **options: Any,
    ) -> bytes:
        """Submit, wait and fetch the result PNG (also written to `out`, if given)."""
        job = await self.submit(image, style, **options)
        await self.wait(job["id"], on_event)
        png = await self.result(job["id"])
        if out is not None:
            Path(out).write_bytes(png)
        return png


class Client:
    """The same API, blocking: an `AsyncClient` on an event loop in a thread of its own."""

    def __init__(self, relay: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.aio = AsyncClient(relay, **options)
        """The asynchronous client doing the work."""

    def _run(self, work: Awaitable[T]) -> T:
        async def run() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and stop the loop's thread."""
        if self._loop.is_closed():
            return
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def styles(self) -> dict[str, Any]:
        """See `AsyncClient.styles`."""
        return self._run(self.aio.styles())

    def submit(self, image: Image, style: str | Sequence[str] = (), **options: Any) -> Job:
        """See `AsyncClient.submit`."""
        return self._run(self.aio.submit(image, style, **options))

    def job(self, job_id: str) -> Job:
        """See `AsyncClient.job`."""
        return self._run(self.aio.job(job_id))

    def events(self, job_id: str, *, websocket: bool = True) -> Iterator[Event]:
        """See `AsyncClient.events`: the same events, as a plain iterator."""
        stream = self.aio.events(job_id, websocket=websocket)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def wait(self, job_id: str, on_event: Callable[[Event], None] | None = None) -> Job:
        """See `AsyncClient.wait` (`on_event` runs on the client's loop thread)."""
        return self._run(self.aio.wait(job_id, on_event))

    def result(self, job_id: str) -> bytes:
        """See `AsyncClient.result`."""
        return self._run(self.aio.result(job_id))

    def download(self, job_id: str, path: str | os.PathLike[str]) -> Path:
        """See `AsyncClient.download`."""
        return self._run(self.aio.download(job_id, path))

    def cancel(self, job_id: str) -> Job:
        """See `AsyncClient.cancel`."""
        return self._run(self.aio.cancel(job_id))

    def delete(self, job_id: str) -> None:
        """See `AsyncClient.delete`."""
        self._run(self.aio.delete(job_id))

    def paint(self, image: Image, style: str | Sequence[str] = (), **options: Any) -> bytes:
        """See `AsyncClient.paint`."""
        return self._run(self.aio.paint(image, style, **options))

"""``Client`` (sync) and ``AsyncClient``: the same methods over one retry core."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from metalic_client import _constants as c
from metalic_client._base import BaseClient, ImageInput, ProgressCallback, encode_form, read_input, verified_bitstream
from metalic_client._exceptions import APIConnectionError, APITimeoutError, WaitTimeoutError
from metalic_client.types import Job

_JobRef = Job | str


def _job_id(job: _JobRef) -> str:
    return job.id if isinstance(job, Job) else job


class Client(BaseClient):
    """Synchronous client of the metalic service.

    Typical workflow::

        with Client("http://localhost:8000", api_key="...") as client:
            job = client.encode("photo.png", target_bpp=0.25, on_progress=print)
            Path("photo.mlic").write_bytes(client.download_bitstream(job))
            png = client.decode(Path("photo.mlic").read_bytes())

    Args:
        base_url, api_key, timeout, max_retries: see :class:`BaseClient`.
        http_client: httpx.Client | None. Bring your own (proxies, transports, tests).
    """

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT, max_retries: int = c.DEFAULT_MAX_RETRIES,
                 http_client: httpx.Client | None = None):
        super().__init__(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        # A caller's own http_client keeps its own timeout settings.
        self._request_timeout = timeout if http_client is None else httpx.USE_CLIENT_DEFAULT
        self._sleep = time.sleep

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                response = self._http.request(method, url, headers=headers, timeout=self._request_timeout, **kwargs)
            except httpx.TimeoutException as exc:
                if attempt >= self.max_retries:
                    raise APITimeoutError(exc.request) from exc
                response = None
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise APIConnectionError(str(exc) or type(exc).__name__, request=exc.request) from exc
                response = None
            if response is not None and (attempt >= self.max_retries or not self._should_retry(response)):
                return self._check(response)
            self._sleep(self._retry_delay(attempt, response))
            attempt += 1

    def encode(self, image: ImageInput, target_bpp: float | None = None, *, lmbda: float | None = None,
               target_psnr: float | None = None, preset: str = "balanced", wait: bool = True,
               on_progress: ProgressCallback | None = None, poll_interval: float = c.DEFAULT_POLL_INTERVAL,
               wait_timeout: float | None = None, idempotency_key: str | None = None, **stages: Any) -> Job:
        """Submit an image; with ``wait`` (default) return the job once it succeeded.

        Args:
            image: path, bytes or binary file. PNG, JPEG, WebP, BMP or TIFF.
            target_bpp / lmbda / target_psnr: float. At most one; none means the default λ.
            preset: str. ``fast``, ``balanced`` or ``max``.
            wait: bool. True polls until the job ends; False returns the queued job at once.
            on_progress: callable(Job). Called on every status or progress change while waiting.
            idempotency_key: str. Reused on every retry of this call; generated when None.
            **stages: refine, adapt_lambda, bias_search, rate_control (bool), refine_steps, lambda_steps (int),
                rounding (``sga``, ``noise`` or ``ste``), model (str).

        Raises:
            JobFailedError, JobCanceledError: the job ended without success.
            WaitTimeoutError: still running after ``wait_timeout`` seconds.
        """
        name, data = read_input(image, "image")
        form = encode_form(target_bpp, lmbda, target_psnr, preset, stages)
        key = idempotency_key or self._new_idempotency_key()
        response = self._request("POST", "/encode", files={"file": (name, data)}, data=form,
                                 headers={"Idempotency-Key": key})
        job = self._job(response)
        if on_progress:
            on_progress(job)
        if not wait:
            return job
        return self.wait(job, on_progress=on_progress, poll_interval=poll_interval, timeout=wait_timeout,
                         _last=job)

    def get_job(self, job: _JobRef) -> Job:
        return self._job(self._request("GET", f"/jobs/{_job_id(job)}"))

    def wait(self, job: _JobRef, *, on_progress: ProgressCallback | None = None,
             poll_interval: float = c.DEFAULT_POLL_INTERVAL, timeout: float | None = None,
             _last: Job | None = None) -> Job:
        """Poll until the job ends; returns it if it succeeded, raises otherwise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = _last
        while True:
            current = self.get_job(job)
            if on_progress and self._changed(last, current):
                on_progress(current)
            last = current
            if current.status.is_terminal:
                return self._finished(current)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(current, timeout)
            self._sleep(poll_interval)

    def cancel(self, job: _JobRef) -> Job:
        return self._job(self._request("DELETE", f"/jobs/{_job_id(job)}"))

    def download_bitstream(self, job: _JobRef, path: str | Path | None = None) -> bytes:
        """The job's bitstream, checked against its sha256 (and written to ``path`` if given).

        Raises:
            IntegrityError: the bytes are not the ones the job reported; nothing is written.
        """
        data = verified_bitstream(job, self._request("GET", f"/jobs/{_job_id(job)}/bitstream"))
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def decode(self, bitstream: ImageInput, path: str | Path | None = None) -> bytes:
        """Decode on the server; returns PNG bytes (also written to ``path`` if given)."""
        name, data = read_input(bitstream, "bitstream.mlic")
        png = self._request("POST", "/decode", files={"file": (name, data)},
                            headers={"Idempotency-Key": self._new_idempotency_key()}).content
        if path is not None:
            Path(path).write_bytes(png)
        return png


class AsyncClient(BaseClient):
    """Asynchronous twin of :class:`Client`: the same methods, awaited."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float | httpx.Timeout = c.DEFAULT_TIMEOUT, max_retries: int = c.DEFAULT_MAX_RETRIES,
                 http_client: httpx.AsyncClient | None = None):
        super().__init__(base_url, api_key, timeout, max_retries)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._request_timeout = timeout if http_client is None else httpx.USE_CLIENT_DEFAULT
        self._sleep = asyncio.sleep

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers(), **kwargs.pop("headers", {})}
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, url, headers=headers, timeout=self._request_timeout, **kwargs)
            except httpx.TimeoutException as exc:
                if attempt >= self.max_retries:
                    raise APITimeoutError(exc.request) from exc
                response = None
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise APIConnectionError(str(exc) or type(exc).__name__, request=exc.request) from exc
                response = None
            if response is not None and (attempt >= self.max_retries or not self._should_retry(response)):
                return self._check(response)
            await self._sleep(self._retry_delay(attempt, response))
            attempt += 1

    async def encode(self, image: ImageInput, target_bpp: float | None = None, *, lmbda: float | None = None,
                     target_psnr: float | None = None, preset: str = "balanced", wait: bool = True,
                     on_progress: ProgressCallback | None = None, poll_interval: float = c.DEFAULT_POLL_INTERVAL,
                     wait_timeout: float | None = None, idempotency_key: str | None = None, **stages: Any) -> Job:
        """See :meth:`Client.encode`."""
        name, data = read_input(image, "image")
        form = encode_form(target_bpp, lmbda, target_psnr, preset, stages)
        key = idempotency_key or self._new_idempotency_key()
        response = await self._request("POST", "/encode", files={"file": (name, data)}, data=form,
                                       headers={"Idempotency-Key": key})
        job = self._job(response)
        if on_progress:
            on_progress(job)
        if not wait:
            return job
        return await self.wait(job, on_progress=on_progress, poll_interval=poll_interval, timeout=wait_timeout,
                               _last=job)

    async def get_job(self, job: _JobRef) -> Job:
        return self._job(await self._request("GET", f"/jobs/{_job_id(job)}"))

    async def wait(self, job: _JobRef, *, on_progress: ProgressCallback | None = None,
                   poll_interval: float = c.DEFAULT_POLL_INTERVAL, timeout: float | None = None,
                   _last: Job | None = None) -> Job:
        deadline = None if timeout is None else time.monotonic() + timeout
        last = _last
        while True:
            current = await self.get_job(job)
            if on_progress and self._changed(last, current):
                on_progress(current)
            last = current
            if current.status.is_terminal:
                return self._finished(current)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeoutError(current, timeout)
            await self._sleep(poll_interval)

    async def cancel(self, job: _JobRef) -> Job:
        return self._job(await self._request("DELETE", f"/jobs/{_job_id(job)}"))

    async def download_bitstream(self, job: _JobRef, path: str | Path | None = None) -> bytes:
        """See :meth:`Client.download_bitstream`."""
        data = verified_bitstream(job, await self._request("GET", f"/jobs/{_job_id(job)}/bitstream"))
        if path is not None:
            Path(path).write_bytes(data)
        return data

    async def decode(self, bitstream: ImageInput, path: str | Path | None = None) -> bytes:
        name, data = read_input(bitstream, "bitstream.mlic")
        png = (await self._request("POST", "/decode", files={"file": (name, data)},
                                   headers={"Idempotency-Key": self._new_idempotency_key()})).content
        if path is not None:
            Path(path).write_bytes(png)
        return png

"""What the HTTP provider adapters share: one client per adapter and one failure table.

A provider adapter subclasses :class:`HttpAdapter` and says only what is its own: the
request for a message (:meth:`HttpAdapter.request`), the provider's message id in an
accepted response, the provider's error text, and which rejections mean the address itself
is bad. Everything else is common:

=====================================  ===========  ========================================
What happened                          Result       Notes
=====================================  ===========  ========================================
2xx                                    sent         provider message id from the response
408, 425, 429, any 5xx                 retryable    ``Retry-After`` (seconds or a date) kept
timeout, refused or reset connection   retryable    the exception's text as the detail
any other 4xx                          rejected     the provider's own message as the detail
=====================================  ===========  ========================================
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import aiohttp
import httpx
import orjson
import yarl
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from adapters.base import AdapterSettings, Message, SendResult
from adapters.secrets import resolve_secret

__all__ = [
    "RETRYABLE_STATUS",
    "AiohttpPool",
    "ApiKeyEmailSettings",
    "HttpAdapter",
    "HttpEmailSettings",
    "HttpSettings",
    "basic_authorization",
    "parse_retry_after",
    "response_object",
]

RETRYABLE_STATUS = frozenset({408, 425, 429})
"""4xx statuses that mean "try again later"; every 5xx does too."""
DETAIL_LIMIT = 500
SKIP_USER_AGENT = ("User-Agent",)
JSON_CONTENT_TYPE = (b"Content-Type", b"application/json")
FORM_CONTENT_TYPE = (b"Content-Type", b"application/x-www-form-urlencoded")


class HttpSettings(AdapterSettings):
    """Keys every HTTP adapter accepts beside the common ones."""

    base_url: str
    """The provider's API root; point it at a regional endpoint or a local test server."""
    timeout: float = Field(default=10.0, gt=0)
    """Seconds to wait for a connection, a write or a response before the send is retryable."""
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    """The connection pool under the httpx interface: aiohttp's (faster under concurrency,
    see bench/README.md) or httpx's own."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


class HttpEmailSettings(HttpSettings):
    """Keys of an HTTP email provider: a sender beside the HTTP ones."""

    from_: str = Field(alias="from")
    """The sender, ``"Name <address>"`` or a bare address the provider has verified."""

    @field_validator("from_")
    @classmethod
    def _sender_address(cls, value: str) -> str:
        if "@" not in parseaddr(value)[1]:
            raise ValueError(f"not an email address: {value!r}")
        return value


class ApiKeyEmailSettings(HttpEmailSettings):
    """Keys of an HTTP email provider that authenticates with an API key."""

    api_key_file: Path | None = None
    """A file holding the API key (instead of ``api_key``)."""
    api_key: SecretStr | None = Field(default=None, validate_default=True)
    """The provider's API key."""

    @field_validator("api_key")
    @classmethod
    def _resolve_api_key(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return resolve_secret("api_key", value, info.data.get("api_key_file"), required=True)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpAdapter:
    """Sends each message as one HTTP request through a shared ``httpx.AsyncClient``.

    The client is made on first use and kept until :meth:`aclose`; its pool holds at most
    ``concurrency`` connections. A client belongs to the event loop that made it, so a send
    from another loop (the synchronous Python API runs a loop per call) makes a new one.

    Requests are built by :meth:`build_request` and handed straight to the client's
    transport: the adapters use no auth flows, redirects or cookies, and skipping that
    machinery halves the CPU a send costs. See bench/README.md for what a send costs.
    """

    name: ClassVar[str] = ""
    reads_accepted_body: ClassVar[bool] = True
    """Whether classifying an accepted (2xx) answer looks at its body. An adapter that finds the
    provider's id in a header says no, and a body already in memory is then left unread."""

    def __init__(self, settings: HttpSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._urls: dict[str, tuple[httpx.URL, bytes]] = {}
        self._extensions = {"timeout": httpx.Timeout(settings.timeout).as_dict()}
        self._default_fields: list[tuple[bytes, bytes]] | None = None
        self._client: httpx.AsyncClient | None = None
        self._in_flight = 0
        self._pool: httpx.AsyncBaseTransport | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def request(self, message: Message) -> httpx.Request:
        """The provider's request for ``message``; build it with :meth:`build_request`."""
        raise NotImplementedError

    def build_request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """A request to ``url`` (a path under ``base_url``, or absolute) with the adapter's timeout.

        ``json`` is encoded by orjson, ``data`` as form fields; either sets ``Content-Type``,
        so ``headers`` name one only beside ``content``. The headers are ``Host``,
        ``User-Agent``, :meth:`default_headers`, ``Content-Type``, ``headers`` and
        ``Content-Length``, none named twice, as ``httpx.AsyncClient.build_request`` would
        give them, and the body is already read. The request is assembled from bytes, with
        the URL parsed once per adapter: httpx's own path through its header and body
        encoders cost more than the rest of a send's work in Python.
        """
        cached = self._urls.get(url)
        if cached is None:
            target = httpx.URL(url if url.startswith(("http://", "https://")) else self.settings.base_url + url)
            cached = self._urls[url] = (target, target.netloc)
        target, host = cached
        if self._default_fields is None:
            self._default_fields = _encoded({"User-Agent": "tact", **self.default_headers()})
        fields = [(b"Host", host), *self._default_fields]
        if json is not None:
            content = orjson.dumps(json)
            fields.append(JSON_CONTENT_TYPE)
        elif data is not None:
            content = urlencode(data).encode("ascii")
            fields.append(FORM_CONTENT_TYPE)
        if headers:
            fields.extend(_encoded(headers))
        body = content or b""
        fields.append((b"Content-Length", b"%d" % len(body)))
        stream = httpx.ByteStream(body)
        request = httpx.Request(method, target, headers=fields, stream=stream, extensions=self._extensions)
        request.headers.encoding = "ascii"  # as encoded above; spares httpx guessing it on each lookup
        request.read()
        return request

    def default_headers(self) -> Mapping[str, str]:
        """Headers on every request of this adapter, such as its credentials.

        Asked for once and kept encoded; :meth:`build_request`'s ``headers`` add what changes
        from one request to the next (and must not name these again).
        """
        return {}

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """The provider's id for an accepted message, if its response carries one."""
        return None

    def error_detail(self, response: httpx.Response) -> str:
        """The provider's own explanation of a failed request, for the send log's ``error``."""
        return response.text

    def address_rejected(self, response: httpx.Response) -> bool:
        """Whether a rejection says the address itself is bad, so it should be suppressed."""
        return False

    def client(self) -> httpx.AsyncClient:
        """The shared client for the running event loop."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._pool = self._transport or self._make_pool()
            self._client = httpx.AsyncClient(
                base_url=self.settings.base_url,
                timeout=self.settings.timeout,
                transport=self._pool,
                headers={"User-Agent": "tact"},
            )
            self._client_loop = loop
        return self._client

    def _make_pool(self) -> httpx.AsyncBaseTransport:
        size = self.settings.concurrency
        if self.settings.transport == "httpx":
            limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
            return httpx.AsyncHTTPTransport(limits=limits)
        return AiohttpPool(size)

    async def send(self, message: Message) -> SendResult:
        """Send ``message`` and classify the provider's answer (see the module's table)."""
        pool = self._pool
        if pool is None or self._client_loop is not asyncio.get_running_loop():
            self.client()
            pool = self._pool
            assert pool is not None
        self._in_flight += 1
        try:
            response = await pool.handle_async_request(self.request(message))
            # Reading a body hands its connection back to the pool. A body already in memory (as
            # AiohttpPool answers) holds none, so it is read only when the adapter will look at it.
            if (
                self.reads_accepted_body
                or not 200 <= response.status_code < 300
                or not isinstance(response.stream, httpx.ByteStream)
            ):
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except (httpx.TransportError, aiohttp.ClientError, OSError, TimeoutError) as error:
            return SendResult.retryable(_describe_failure(error))
        finally:
            self._in_flight -= 1
        return self.classify(response, message)

    def classify(self, response: httpx.Response, message: Message) -> SendResult:
        """The result for a response (see the module's table)."""
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.sent(provider_message_id=self.provider_message_id(response, message))
        detail = f"HTTP {status}: {_shorten(self.error_detail(response))}"
        if status >= 500 or status in RETRYABLE_STATUS:
            return SendResult.retryable(detail, retry_after=parse_retry_after(response.headers.get("Retry-After")))
        return SendResult.rejected(detail, address_invalid=self.address_rejected(response))

    async def aclose(self) -> None:
        """Wait for sends in flight, then close the client; a later send makes a new one."""
        client, self._client, self._pool = self._client, None, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            # A pool closed under a send that is still connecting would leak that connection:
            # let sends in flight finish (each is bounded by the timeout) first.
            deadline = asyncio.get_running_loop().time() + 2 * self.settings.timeout
            while self._in_flight and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
            await client.aclose()
        self._client_loop = None


class AiohttpPool(httpx.AsyncBaseTransport):
    """An httpx transport over one aiohttp session: aiohttp's connection pool under httpx.

    The adapters send small requests and read small answers, so the request body goes as
    bytes and aiohttp reads the answer whole, releasing the connection before the response
    is returned: its body is an ``httpx.ByteStream`` in memory, to be read (``aread``) only
    if wanted. aiohttp's exceptions propagate as they are (the adapter maps them, see
    :func:`_describe_failure`).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[float | None, aiohttp.ClientTimeout] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the pool and return the whole answer."""
        session = self._session
        if session is None:
            connector = aiohttp.TCPConnector(limit=self._size)
            # Like any httpx transport, the pool keeps no cookies: they are a client's business.
            session = self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
            )
        text = str(request.url)
        url = self._urls.get(text)
        if url is None:
            url = self._urls[text] = yarl.URL(text, encoded=True)
        # One deadline for the whole exchange: the adapter's timeout, which httpx calls "read".
        seconds = request.extensions.get("timeout", {}).get("read")
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(total=seconds)
        try:
            body = request.content
        except httpx.RequestNotRead:  # a streaming body, which build_request never makes
            body = await request.aread()
        encoding = request.headers.encoding
        headers = [(name.decode(encoding), value.decode(encoding)) for name, value in request.headers.raw]
        # aiohttp adds a User-Agent of its own to a request without one; httpx would send none.
        skip = None if "user-agent" in request.headers else SKIP_USER_AGENT
        answer = await session.request(
            request.method, url, headers=headers, data=body,
            timeout=timeout, allow_redirects=False, skip_auto_headers=skip,
        )  # fmt: skip
        try:
            stream = httpx.ByteStream(await answer.read())
        finally:
            answer.release()
        return httpx.Response(answer.status, headers=answer.raw_headers, stream=stream, request=request)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def response_object(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON body when it is an object, else an empty dict (providers' error
    bodies are not always JSON)."""
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def basic_authorization(user: str, password: str) -> str:
    """An ``Authorization`` header value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _encoded(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Header names and values as bytes: ASCII, as httpx requires unless told otherwise."""
    return [(name.encode("ascii"), value.encode("ascii")) for name, value in headers.items()]


def _describe_failure(error: BaseException) -> str:
    """A transport failure in words: the underlying library's exception, not its httpx mapping."""
    cause = error.__cause__ if isinstance(error, httpx.TransportError) and error.__cause__ is not None else error
    if isinstance(cause, TimeoutError) or (cause is error and isinstance(error, httpx.TimeoutException)):
        return f"timeout: {type(cause).__name__}"
    text = str(cause)
    return f"connection failed: {type(cause).__name__}" + (f": {text}" if text else "")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"

"""The connection pool behind the ``smtp`` adapter: aiosmtplib connections on one event loop.

:class:`ConnectionPool` belongs to the loop that made it and keeps at most ``size``
connections, each carrying one transaction at a time. Connections are opened on demand
through the ``connect`` callable the adapter gives it, reused while they stay healthy, and
closed at once (:func:`drop_connection`) when they fail. :mod:`adapters.smtp` builds the
messages, opens the connections and classifies what the server answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

from aiosmtplib import SMTP, SMTPException, SMTPRecipientsRefused, SMTPResponseException, SMTPServerDisconnected

__all__ = ["ConnectionPool", "drop_connection"]

QUIT_TIMEOUT = 5.0
"""Seconds to wait for the answer to QUIT before dropping the connection anyway."""


class ConnectionPool:
    """At most ``size`` connections on one event loop; each carries one transaction at a time.

    A connection is idle in the pool or held by exactly one send. A send takes an idle
    connection or, when there is none, opens one; afterwards it returns the connection unless
    the connection failed or the pool was closed meanwhile, in which case it closes it.
    """

    def __init__(self, size: int, connect: Callable[[], Awaitable[SMTP]]) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed = False
        self._connect = connect
        self._slots = asyncio.Semaphore(size)
        self._idle: list[SMTP] = []

    async def transmit(self, mail: EmailMessage, sender: str, recipient: str) -> str:
        """Send ``mail`` on a pooled connection; returns the server's reply to DATA."""
        async with self._slots:
            client = self._take_idle()
            reused = client is not None
            if client is None:
                client = await self._connect()
            try:
                try:
                    reply = await _send_on(client, mail, sender, recipient)
                except (SMTPServerDisconnected, SMTPResponseException) as error:
                    if not reused or not _stale(error):
                        raise
                    # The server dropped a connection that sat idle here: try once on a fresh one.
                    drop_connection(client)
                    client = await self._connect()
                    reply = await _send_on(client, mail, sender, recipient)
            except (SMTPResponseException, SMTPRecipientsRefused):
                # A refused transaction is reset by the client and leaves the connection usable.
                await self._release(client)
                raise
            except BaseException:
                drop_connection(client)
                raise
            await self._release(client)
            return reply

    async def aclose(self) -> None:
        """Say QUIT on idle connections; busy ones close when their send ends."""
        self.closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client in idle))
        await asyncio.sleep(0)  # let the dropped sockets finish closing before the loop may end

    def abandon(self) -> None:
        """Close from outside this pool's loop: drop idle connections there if it still runs."""
        self.closed = True
        idle, self._idle = self._idle, []
        if idle and not self.loop.is_closed():
            for client in idle:
                self.loop.call_soon_threadsafe(drop_connection, client)

    def _take_idle(self) -> SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            drop_connection(client)
        return None

    async def _release(self, client: SMTP) -> None:
        if not client.is_connected:
            drop_connection(client)
        elif self.closed:
            await _quit(client)
        else:
            self._idle.append(client)


async def _send_on(client: SMTP, mail: EmailMessage, sender: str, recipient: str) -> str:
    _refused, reply = await client.send_message(mail, sender=sender, recipients=[recipient])
    return reply


async def _quit(client: SMTP) -> None:
    transport = client.transport
    try:
        await client.quit(timeout=QUIT_TIMEOUT)
    except (SMTPException, OSError):
        pass
    finally:
        drop_connection(client, transport)


def drop_connection(client: SMTP, transport: asyncio.BaseTransport | None = None) -> None:
    """Close the connection at once.

    After QUIT, or on a connection that failed, nothing is gained by TLS's close_notify
    exchange (stdlib smtplib skips it too); waiting for it could outlive the event loop and
    leave the socket open.
    """
    transport = transport or client.transport
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    client.close()


def _stale(error: BaseException) -> bool:
    return isinstance(error, SMTPServerDisconnected) or (isinstance(error, SMTPResponseException) and error.code == 421)

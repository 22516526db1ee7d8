"""Delivery throughput: each delivery adapter beside a bare client loop doing the same sends.

Two sinks run in child processes (so they do not share this process's interpreter): an
aiosmtpd server that accepts every message, and an aiohttp server that answers every POST
like SendGrid's mail send (202 and an ``X-Message-Id``). Against each, in the same run and at
the same concurrency, the script times:

- ``smtp``: the ``smtp`` adapter, against a bare loop of aiosmtplib connections, one per worker;
- ``http``: the ``sendgrid`` adapter (httpx), against a bare loop of aiohttp requests with
  the same JSON document (checked before timing) whose answers it reads too.

Each pair runs ``--rounds`` times, alternating, and the best round of each is reported with
the ratio adapter / bare loop (goal: at least 0.8). Usage (see bench/README.md):

    .venv/bin/python bench/delivery.py --sends 5000 --concurrency 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import aiohttp
import aiosmtplib

from adapters import Message, SendStatus, build_adapter
from adapters.sendgrid import SendgridAdapter

SENDER = "Bench <bench@example.com>"
API_KEY = "SG.bench-key"


def bench_message(index: int) -> Message:
    """The message number ``index``: the same shape for every contender."""
    return Message(
        touchpoint_id=str(index),
        idempotency_key=f"bench-{index}:step",
        channel="email",
        to=f"recipient{index}@example.com",
        recipient_id=f"r{index}",
        campaign_id="bench",
        step_id="step",
        kind="marketing",
        subject=f"Hello recipient {index}",
        text=f"Hello recipient {index},\n\nthis is a benchmark message.\n",
        html=f"<p>Hello recipient {index},</p><p>this is a benchmark message.</p>",
        headers={"List-Unsubscribe": "<https://tact.example.com/u/token>"},
    )


async def run_workers(sends: int, concurrency: int, send: Callable[[int, int], Awaitable[None]]) -> float:
    """Run ``send(worker, index)`` for every index on ``concurrency`` workers; the seconds taken."""
    indexes = iter(range(sends))

    async def worker(number: int) -> None:
        for index in indexes:
            await send(number, index)

    began = time.perf_counter()
    await asyncio.gather(*(worker(number) for number in range(concurrency)))
    return time.perf_counter() - began


async def adapter_round(table: dict[str, object], sends: int, concurrency: int) -> float:
    """Seconds for ``sends`` messages through the adapter built from ``table``."""
    adapter = build_adapter(table)
    failures = 0

    async def send(_worker: int, index: int) -> None:
        nonlocal failures
        result = await adapter.send(bench_message(index))
        failures += result.status is not SendStatus.SENT

    try:
        seconds = await run_workers(sends, concurrency, send)
    finally:
        await adapter.aclose()
    if failures:
        raise SystemExit(f"{failures} adapter sends failed")
    return seconds


async def bare_smtp_round(port: int, sends: int, concurrency: int) -> float:
    """Seconds for ``sends`` messages over one aiosmtplib connection per worker."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) for _ in range(concurrency)]
    for client in clients:
        await client.connect()

    async def send(worker: int, index: int) -> None:
        message = bench_message(index)
        mime = EmailMessage()
        mime["From"], mime["To"], mime["Subject"] = SENDER, message.to, message.subject
        mime["Message-ID"] = f"<{message.idempotency_key}@example.com>"
        mime["List-Unsubscribe"] = message.headers["List-Unsubscribe"]
        mime.set_content(message.text)
        mime.add_alternative(message.html, subtype="html")
        await clients[worker].send_message(mime)

    try:
        return await run_workers(sends, concurrency, send)
    finally:
        for client in clients:
            await client.quit()


def sendgrid_body(message: Message) -> dict[str, object]:
    """The bare loop's JSON body for ``message``: the document the ``sendgrid`` adapter sends."""
    return {
        "personalizations": [{"to": [{"email": message.to}]}],
        "from": {"email": "bench@example.com", "name": "Bench"},
        "subject": message.subject,
        "content": [
            {"type": "text/plain", "value": message.text},
            {"type": "text/html", "value": message.html},
        ],
        "headers": dict(message.headers),
        "custom_args": {
            "touchpoint_id": message.touchpoint_id,
            "idempotency_key": message.idempotency_key,
            "campaign_id": message.campaign_id,
            "step_id": message.step_id,
        },
    }


async def bare_http_round(port: int, sends: int, concurrency: int) -> float:
    """Seconds for ``sends`` SendGrid-shaped POSTs through one aiohttp session."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector, headers=headers) as session:

        async def send(_worker: int, index: int) -> None:
            body = sendgrid_body(bench_message(index))
            async with session.post("/v3/mail/send", data=json.dumps(body)) as response:
                await response.read()
                if response.status != 202:
                    raise SystemExit(f"bare HTTP send got {response.status}")

        return await run_workers(sends, concurrency, send)


def serve_smtp() -> None:
    """Child process: an aiosmtpd sink; prints its port, runs until stdin closes."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd needs a concrete port: ask the kernel for a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    print(port, flush=True)
    sys.stdin.read()
    controller.stop()


def serve_http() -> None:
    """Child process: an aiohttp sink answering like SendGrid; prints its port, runs until stdin closes."""
    from aiohttp import web

    counter = 0

    async def mail_send(request: web.Request) -> web.Response:
        nonlocal counter
        await request.read()
        counter += 1
        return web.Response(status=202, headers={"X-Message-Id": f"bench-{counter}"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v3/mail/send", mail_send)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await runner.cleanup()

    asyncio.run(main())


def start_sink(kind: str) -> tuple[subprocess.Popen[str], int]:
    """Start a sink child process and read the port it listens on."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def report(name: str, adapter_seconds: list[float], bare_seconds: list[float], sends: int) -> float:
    """Print the best round of each contender; return the ratio of their rates."""
    adapter_rate, bare_rate = sends / min(adapter_seconds), sends / min(bare_seconds)
    ratio = adapter_rate / bare_rate
    print(
        f"{name}: adapter {adapter_rate:,.0f}/s, bare loop {bare_rate:,.0f}/s, ratio {ratio:.2f} "
        f"(rounds: adapter {', '.join(f'{sends / s:,.0f}' for s in adapter_seconds)}; "
        f"bare {', '.join(f'{sends / s:,.0f}' for s in bare_seconds)})",
        flush=True,
    )
    return ratio


async def measure(args: argparse.Namespace, smtp_port: int, http_port: int) -> dict[str, float]:
    """Alternate adapter and bare rounds for both channels; the ratios."""
    smtp_table = {
        "adapter": "smtp", "host": "127.0.0.1", "port": smtp_port, "from": SENDER,
        "pool_size": args.concurrency, "concurrency": args.concurrency,
    }  # fmt: skip
    http_table = {
        "adapter": "sendgrid", "base_url": f"http://127.0.0.1:{http_port}", "api_key": API_KEY,
        "from": SENDER, "concurrency": args.concurrency,
    }  # fmt: skip
    message = bench_message(0)
    if SendgridAdapter.from_settings(http_table).payload(message) != sendgrid_body(message):
        raise SystemExit("the bare HTTP loop would send another body than the sendgrid adapter")
    timings: dict[str, list[float]] = {"smtp": [], "bare_smtp": [], "http": [], "bare_http": []}
    for _ in range(args.rounds):
        timings["smtp"].append(await adapter_round(smtp_table, args.sends, args.concurrency))
        timings["bare_smtp"].append(await bare_smtp_round(smtp_port, args.sends, args.concurrency))
        timings["http"].append(await adapter_round(http_table, args.sends, args.concurrency))
        timings["bare_http"].append(await bare_http_round(http_port, args.sends, args.concurrency))
    return {
        "smtp": report("smtp", timings["smtp"], timings["bare_smtp"], args.sends),
        "http": report("sendgrid (httpx)", timings["http"], timings["bare_http"], args.sends),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=5000, help="messages per round and contender")
    parser.add_argument("--concurrency", type=int, default=20, help="sends in flight at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=["smtp", "http"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "smtp":
        serve_smtp()
        return 0
    if args.serve == "http":
        serve_http()
        return 0
    smtp_sink, smtp_port = start_sink("smtp")
    http_sink, http_port = start_sink("http")
    try:
        print(f"{args.sends} sends per round, concurrency {args.concurrency}, {os.cpu_count()} CPUs", flush=True)
        ratios = asyncio.run(measure(args, smtp_port, http_port))
    finally:
        for child in (smtp_sink, http_sink):
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=10)
    return 0 if all(ratio >= 0.8 for ratio in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

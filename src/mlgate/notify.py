"""Redis pub/sub accelerator for change notices between replicas.

The database stays the source of truth: every replica polls `auth_changes` (300 ms)
and the model catalogue (1 s) anyway. This only makes the others look at once: each
change this process commits is published on one channel, and a notice from another
process nudges the auth view (and the model registry for model notices). When Redis
is away, notices are dropped and the reconnect loop backs off; propagation falls back
to the polls, and nothing is ever accepted or refused on the strength of a notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from mlgate.context import AppContext

log = logging.getLogger("mlgate.notify")

CHANNEL = "mlgate:changes"
MODEL_KIND = "model"
QUEUE_MAX = 1000
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0

Handler = Callable[[str, str], None]


class Notifier:
    """Publishes local change notices and turns remote ones into nudges.

    `publish(kind, subject)` is synchronous and never blocks or raises: it is called
    from request code right after a commit. Kinds are those of `auth_changes`
    (`user`, `session`, `api_key`, `role`, `signing_key`) plus `model` (subject: the
    model name) for catalogue changes.
    """

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.instance = uuid.uuid4().hex
        self.connected = False
        self.received = 0
        self._handlers: list[tuple[Callable[[str], bool], Handler]] = []
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_MAX)
        self._task: asyncio.Task[None] | None = None

    def on(self, match: Callable[[str], bool], handler: Handler) -> None:
        """Call `handler(kind, subject)` for each remote notice whose kind matches."""
        self._handlers.append((match, handler))

    def publish(self, kind: str, subject: str) -> None:
        if not self.connected:
            return  # the other replicas' polls will see the change
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait((kind, subject))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mlgate-notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected = False

    async def _run(self) -> None:
        delay = BACKOFF_START
        warned = False
        while True:
            client: Any = aioredis.from_url(self.url, socket_connect_timeout=2, socket_timeout=None)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(self.channel)
                self.connected = True
                if warned:
                    log.info("change notices through Redis restored")
                warned = False
                delay = BACKOFF_START
                await self._pump(client, pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not warned:
                    log.warning(
                        "Redis change notices unavailable (%s); replicas fall back to polling",
                        type(exc).__name__,
                    )
                    warned = True
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _pump(self, client: Any, pubsub: Any) -> None:
        sender = asyncio.create_task(self._send(client))
        try:
            while True:
                if sender.done():
                    sender.result()  # re-raise the sender's connection error
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._dispatch(message.get("data"))
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _send(self, client: Any) -> None:
        while True:
            kind, subject = await self._queue.get()
            payload = json.dumps({"from": self.instance, "kind": kind, "subject": subject})
            await client.publish(self.channel, payload)

    def _dispatch(self, data: object) -> None:
        try:
            notice = json.loads(data if isinstance(data, str | bytes) else "")
            origin, kind, subject = notice["from"], str(notice["kind"]), str(notice["subject"])
        except (ValueError, KeyError, TypeError):
            return
        if origin == self.instance:
            return
        self.received += 1
        for match, handler in self._handlers:
            if match(kind):
                try:
                    handler(kind, subject)
                except Exception:
                    log.warning("change notice handler failed", exc_info=True)


def _nudge_models(models: object) -> None:
    """Make the model registry look at the catalogue now: its `nudge()` when it has one,
    else a background `refresh()` (the registry polls anyway; this only hurries it)."""
    nudge = getattr(models, "nudge", None)
    if callable(nudge):
        nudge()
        return
    refresh = getattr(models, "refresh", None)
    if callable(refresh):
        task = asyncio.get_running_loop().create_task(_quietly(refresh))
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


async def _quietly(refresh: Callable[[], Any]) -> None:
    try:
        await refresh()
    except Exception as exc:
        log.debug("model refresh after a notice failed: %s", type(exc).__name__)


async def start_notifier(ctx: AppContext) -> None:
    """With `MLGATE_REDIS_URL`: publish this process's changes and react to others'."""
    if not ctx.settings.redis_url:
        return
    notifier = Notifier(ctx.settings.redis_url)
    view = ctx.view
    notifier.on(lambda kind: kind != MODEL_KIND, lambda _k, _s: view.nudge())
    notifier.on(lambda kind: kind == MODEL_KIND, lambda _k, _s: _nudge_models(ctx.models))
    view.add_publisher(notifier.publish)
    ctx.notifier = notifier
    await notifier.start()


async def stop_notifier(ctx: AppContext) -> None:
    if ctx.notifier is not None:
        await ctx.notifier.stop()

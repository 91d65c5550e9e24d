"""Which capabilities the daemon starts, in order, for a given configuration."""

from __future__ import annotations

import asyncio

from config.schema import Config
from daemon.app import Runtime, Starter, Stopper
from handlers.api.ratelimit import InstanceHeartbeat, RateLimiter
from handlers.calls.events import EventBus
from handlers.calls.service import start_calls
from handlers.events.hub import EventHub
from handlers.events.writer import EventLogWriter
from handlers.ivr.prompts import PromptStore
from handlers.media.retention import RetentionSweeper
from handlers.messages.dispatch import Dispatcher
from handlers.messages.dispatch_process import DispatchProcess
from handlers.messages.mms_dispatch import MmsDispatcher
from handlers.messages.mms_reports import ReportListener
from handlers.messages.rollup import StatsRollup
from handlers.outage import LoopMetrics, LoopTracker
from handlers.registry.index import IndexFollower
from handlers.verify.service import Sweeper, Verifier
from handlers.webhooks.delivery import WebhookDeliverer
from handlers.webhooks.targets import TargetPolicy


async def start_registry_index(runtime: Runtime) -> Stopper:
    """Load the sender-number/opt-out index and follow changes made by any instance."""
    follower = IndexFollower(runtime.dsn, runtime.context.index,
                             loops=runtime.context.metrics.group("loops", LoopMetrics))
    await follower.start()
    runtime.context.readiness["registry_index"] = follower.readiness
    return follower.stop


async def start_dispatcher(runtime: Runtime) -> Stopper:
    """Bind to the configured carriers and dispatch the message queue (in a process of its own
    unless `messaging.dispatch_process` is false)."""
    dispatcher: Dispatcher | DispatchProcess
    if runtime.config.messaging.dispatch_process:
        dispatcher = DispatchProcess(runtime.config, runtime.dsn, runtime.context.metrics)
    else:
        dispatcher = Dispatcher(runtime.config, runtime.pool, runtime.dsn, runtime.context.metrics,
                                health=runtime.context.db)
    await dispatcher.start()
    runtime.context.dispatch_wake.attach(dispatcher.wake)
    if runtime.config.smpp.carriers:
        runtime.context.readiness["smpp"] = dispatcher.readiness

    async def stop() -> None:
        runtime.context.dispatch_wake.detach()
        await dispatcher.stop(runtime.config.lifecycle.drain_seconds)

    return stop


async def start_mms_dispatcher(runtime: Runtime) -> Stopper | None:
    """MMS over MM7: the delivery-report listener, then the dispatcher (if carriers exist)."""
    if not runtime.config.mm7.carriers:
        return None
    dispatcher = MmsDispatcher(runtime.config, runtime.pool, runtime.dsn, runtime.context.metrics)
    listener = ReportListener(runtime.config.mm7, runtime.pool, dispatcher.metrics.reports)
    await listener.start()
    await dispatcher.start()
    runtime.context.readiness["mm7"] = dispatcher.readiness

    async def stop() -> None:
        await dispatcher.stop(runtime.config.lifecycle.drain_seconds)
        await listener.stop()

    return stop


async def start_webhook_deliverer(runtime: Runtime) -> Stopper:
    """Deliver queued webhook events, signed, at least once."""
    deliverer = WebhookDeliverer(
        runtime.pool, metrics=runtime.context.metrics, health=runtime.context.db,
        targets=TargetPolicy.of(runtime.config.webhooks.allow_networks))
    await deliverer.start()

    async def stop() -> None:
        await deliverer.stop(runtime.config.lifecycle.drain_seconds)

    return stop


async def start_verification_sweeper(runtime: Runtime) -> Stopper:
    """Expire verification codes and erase the codes of closed verifications."""
    tracker = LoopTracker("verification-sweeper",
                          runtime.context.metrics.group("loops", LoopMetrics), runtime.context.db)
    sweeper = Sweeper(Verifier(runtime.config.verification, runtime.context.index),
                      runtime.pool, tracker)
    sweeper.start()
    return sweeper.stop


async def start_recording_retention(runtime: Runtime) -> Stopper:
    """Delete recordings, file and row together, past `recordings.retention_days` (also with
    media disabled: recordings made before still expire)."""
    tracker = LoopTracker("recording-retention",
                          runtime.context.metrics.group("loops", LoopMetrics), runtime.context.db)
    sweeper = RetentionSweeper(runtime.pool, tracker, runtime.config.recordings)
    sweeper.start()
    return sweeper.stop


async def start_message_stats_rollup(runtime: Runtime) -> Stopper:
    """Roll settled messages up into the statistics rollups, every minute."""
    tracker = LoopTracker("message-stats-rollup",
                          runtime.context.metrics.group("loops", LoopMetrics), runtime.context.db)
    rollup = StatsRollup(runtime.pool, tracker)
    rollup.start()
    return rollup.stop


async def start_instance_heartbeat(runtime: Runtime) -> Stopper:
    """Count the live instances sharing the database, so that each one's rate buckets hold
    its share of every tenant's limits."""
    ctx = runtime.context
    if ctx.limiter is None:
        ctx.limiter = RateLimiter(ctx.pool, ctx.metrics)
    heartbeat = InstanceHeartbeat(runtime.pool, ctx.limiter)
    await heartbeat.start()
    return heartbeat.stop


async def start_event_stream(runtime: Runtime) -> Stopper:
    """Follow the event log (every instance's events) for GET /v1/events, and delete events
    past `events.retention_hours`."""
    hub = EventHub(runtime.dsn, runtime.pool, runtime.config.events,
                   metrics=runtime.context.metrics)
    await hub.start()
    runtime.context.events = hub
    runtime.context.readiness["events"] = hub.readiness
    return hub.stop


async def start_prompts(runtime: Runtime) -> None:
    """The IVR prompts under <state_dir>/prompts, the shipped defaults converted for playing."""
    store = PromptStore(runtime.config.state_dir / "prompts")
    await asyncio.to_thread(store.prepare)
    runtime.context.prompts = store


async def start_calls_service(runtime: Runtime) -> Stopper | None:
    """The SIP B2BUA toward trunks and extensions (unless sip.enabled is false), with its
    media process anchoring and recording calls (unless media.enabled is false); its call
    events go to the event log through a writer off the signalling path."""
    if not runtime.config.sip.enabled:
        return None
    bus = EventBus()
    writer = EventLogWriter(runtime.pool, capacity=runtime.config.events.buffer_events,
                            metrics=runtime.context.metrics)
    bus.add_sink(writer.offer)
    writer.start()
    drain = runtime.config.lifecycle.drain_seconds
    try:
        stop_calls = await start_calls(
            runtime.config.sip, runtime.pool, runtime.context, runtime.dsn, bus=bus,
            media=runtime.config.media, state_dir=runtime.config.state_dir,
            retention=runtime.config.recordings.retention, prompts=runtime.context.prompts)
    except BaseException:
        await writer.stop(drain)
        raise

    async def stop() -> None:
        await stop_calls()  # the calls it ends publish their call.ended first
        await writer.stop(drain)

    return stop


def starters(config: Config, *, demo: bool) -> list[Starter]:
    """The capability starters for this configuration (each returns its stopper)."""
    found: list[Starter] = []
    if demo:
        from daemon.demo import start_simulators

        found.append(start_simulators)
    found += [start_registry_index, start_instance_heartbeat, start_dispatcher,
              start_mms_dispatcher, start_webhook_deliverer, start_verification_sweeper,
              start_recording_retention, start_message_stats_rollup, start_event_stream,
              start_prompts, start_calls_service]
    if demo:
        from daemon.demo import start_demo_phone

        found.append(start_demo_phone)
    return found

"""Which capabilities the daemon starts, in order, for a given configuration."""

from __future__ import annotations

from config.schema import Config
from daemon.app import Runtime, Starter, Stopper
from handlers.api.ratelimit import InstanceHeartbeat, RateLimiter
from handlers.calls.service import start_calls
from handlers.messages.dispatch import Dispatcher
from handlers.registry.index import IndexFollower
from handlers.webhooks.delivery import WebhookDeliverer
from handlers.webhooks.targets import TargetPolicy


async def start_registry_index(runtime: Runtime) -> Stopper:
    """Load the sender-number/opt-out index and follow changes made by any instance."""
    follower = IndexFollower(runtime.dsn, runtime.context.index)
    await follower.start()
    runtime.context.readiness["registry_index"] = follower.readiness
    return follower.stop


async def start_dispatcher(runtime: Runtime) -> Stopper:
    """Bind to the configured carriers and dispatch the message queue."""
    dispatcher = Dispatcher(runtime.config, runtime.pool, runtime.dsn, runtime.context.metrics)
    await dispatcher.start()
    if runtime.config.smpp.carriers:
        runtime.context.readiness["smpp"] = dispatcher.readiness

    async def stop() -> None:
        await dispatcher.stop(runtime.config.lifecycle.drain_seconds)

    return stop


async def start_webhook_deliverer(runtime: Runtime) -> Stopper:
    """Deliver queued webhook events, signed, at least once."""
    deliverer = WebhookDeliverer(
        runtime.pool, metrics=runtime.context.metrics,
        targets=TargetPolicy.of(runtime.config.webhooks.allow_networks))
    await deliverer.start()

    async def stop() -> None:
        await deliverer.stop(runtime.config.lifecycle.drain_seconds)

    return stop


async def start_instance_heartbeat(runtime: Runtime) -> Stopper:
    """Count the live instances sharing the database, so that each one's rate buckets hold
    its share of every tenant's limits."""
    ctx = runtime.context
    if ctx.limiter is None:
        ctx.limiter = RateLimiter(ctx.pool, ctx.metrics)
    heartbeat = InstanceHeartbeat(runtime.pool, ctx.limiter)
    await heartbeat.start()
    return heartbeat.stop


async def start_calls_service(runtime: Runtime) -> Stopper | None:
    """The SIP B2BUA toward trunks and extensions (unless sip.enabled is false)."""
    if not runtime.config.sip.enabled:
        return None
    return await start_calls(runtime.config.sip, runtime.pool, runtime.context, runtime.dsn)


def starters(config: Config, *, demo: bool) -> list[Starter]:
    """The capability starters for this configuration (each returns its stopper)."""
    found: list[Starter] = []
    if demo:
        from daemon.demo import start_simulators

        found.append(start_simulators)
    found += [start_registry_index, start_instance_heartbeat, start_dispatcher, start_webhook_deliverer,
              start_calls_service]
    if demo:
        from daemon.demo import start_demo_phone

        found.append(start_demo_phone)
    return found

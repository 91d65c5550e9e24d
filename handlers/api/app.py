"""Build the aiohttp application of the control API from the capabilities' route declarations."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from handlers.api import audit_routes, customers, departments, keys, service
from handlers.api.context import CTX, AppContext
from handlers.api.framework import RouteTable, request_middleware
from handlers.api.hostile import hostile_guard
from handlers.api.outage import outage_errors, outage_headers
from handlers.api.ratelimit import RateLimiter
from handlers.calls import agent_routes, control_routes
from handlers.calls import routes as calls_routes
from handlers.calls import stats_routes as call_stats_routes
from handlers.events import routes as event_routes
from handlers.ivr import callback_routes, prompt_routes
from handlers.media import recording_routes
from handlers.messages import history_routes, imports, inbound
from handlers.messages import routes as message_routes
from handlers.messages.accept import PolicyCache
from handlers.messages.group import SendGroup
from handlers.registry import routes as registry_routes
from handlers.verify import routes as verify_routes
from handlers.webhooks import routes as webhook_routes
from handlers.webhooks.targets import TargetPolicy

RouteProvider = Callable[[RouteTable], None]

# Each capability contributes its routes here; order is the order in the OpenAPI document.
ROUTE_PROVIDERS: list[RouteProvider] = [
    service.add_routes, keys.add_routes, registry_routes.add_routes, message_routes.add_routes,
    history_routes.add_routes, imports.add_routes, webhook_routes.add_routes,
    calls_routes.add_routes, control_routes.add_routes, agent_routes.add_routes,
    recording_routes.add_routes, verify_routes.add_routes, audit_routes.add_routes,
    departments.add_routes, customers.add_routes, call_stats_routes.add_routes, inbound.add_routes,
    event_routes.add_routes, callback_routes.add_routes, prompt_routes.add_routes,
]


def build_app(ctx: AppContext) -> web.Application:
    """The control API application for one daemon context."""
    if ctx.limiter is None:
        ctx.limiter = RateLimiter(ctx.pool, ctx.metrics)
        ctx.settings_changed.append(ctx.limiter.forget)
    if ctx.policies is None:
        ctx.policies = PolicyCache()
        ctx.settings_changed.append(ctx.policies.forget)
    if ctx.sends is None:
        ctx.sends = SendGroup(ctx.pool, wake=ctx.dispatch_wake)
    TargetPolicy.of(ctx.config.webhooks.allow_networks)  # a malformed range stops start-up
    for provide in ROUTE_PROVIDERS:
        provide(ctx.routes)
    # The per-route JSON limit is enforced by read_json; this is the ceiling for uploads.
    app = web.Application(
        middlewares=[outage_headers, request_middleware, outage_errors, hostile_guard],
        client_max_size=max(ctx.config.api.max_upload_bytes, ctx.config.api.max_body_bytes),
    )
    app[CTX] = ctx
    ctx.routes.mount(app)
    sends = ctx.sends

    async def stop_sends(_app: web.Application) -> None:
        await sends.stop()  # after the last request was answered: none waits on it any more

    app.on_cleanup.append(stop_sends)
    return app

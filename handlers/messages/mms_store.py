"""MMS rows: the images of an accepted MMS (stored with the message, in its transaction) and
whether this instance has an MM7 route at all."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from handlers.messages.compose import JpegInfo

# The MM7 dispatcher listens here, not on the SMS channel: a burst of SMS sends must not cost
# it a claim query each.
MMS_CHANNEL = "telgate_dispatch_mms"

# Set by the MM7 dispatcher when it starts with at least one carrier: until then an MMS
# answers 422 no_route instead of waiting in a queue nobody serves.
_route_available = False


def set_route_available(available: bool) -> None:
    """Record whether MMS can be dispatched by this instance."""
    global _route_available
    _route_available = available


def route_available() -> bool:
    """Whether an MMS accepted now has a carrier to go to."""
    return _route_available


async def attach(conn: asyncpg.Connection, message_id: uuid.UUID, images: Sequence[bytes],
                 infos: Sequence[JpegInfo]) -> None:
    """Store the images and hand the message's queued recipients to the MM7 dispatcher (in the
    caller's transaction, so the SMPP dispatcher never sees them as SMS)."""
    await conn.executemany(
        """INSERT INTO message_images (message_id, idx, content, width, height)
           VALUES ($1, $2, $3, $4, $5)""",
        [(message_id, i, data, info.width, info.height)
         for i, (data, info) in enumerate(zip(images, infos, strict=True))])
    await conn.execute(
        "UPDATE messages SET image_count = $2, image_bytes = $3 WHERE id = $1",
        message_id, len(images), sum(len(d) for d in images))
    await conn.execute(
        "UPDATE recipients SET mms = true WHERE message_id = $1", message_id)
    await conn.execute("SELECT pg_notify($1, '')", MMS_CHANNEL)  # delivered on commit


async def load_images(conn: asyncpg.Connection, message_id: uuid.UUID) -> list[bytes]:
    """A message's images in the order they were sent."""
    rows = await conn.fetch(
        "SELECT content FROM message_images WHERE message_id = $1 ORDER BY idx", message_id)
    return [bytes(r["content"]) for r in rows]

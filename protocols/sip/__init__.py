"""RFC 3261 SIP stack, sans-I/O core plus thin asyncio adapters.

message/uri/headers: wire format · transaction: §17 state machines and TransactionLayer ·
dialog: §12 · auth: digest (RFC 8760) and lock-out · sdp: minimal SDP · transport: asyncio
UDP/TCP and SipEndpoint, the only module that touches sockets or the event loop.
"""

"""API key scopes: what a key may do, in four nested levels.

`read` < `send` < `manage` < `admin`: a key holds its scope and every lower one. Each route
declares the scope it needs (`Route(..., scope=...)`); the route table refuses to mount an
authenticated route that declares none, so a new route cannot be reachable by accident.
"""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    """A key's rights; each includes those of the scopes before it."""

    READ = "read"  # look: lists, statistics, exports, settings
    SEND = "send"  # plus: send, change or cancel messages, test sends
    MANAGE = "manage"  # plus: sender numbers, opt-outs, templates, webhooks, imports, extensions
    ADMIN = "admin"  # plus: API keys, tenant settings, SP IDs, the audit trail

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def covers(self, needed: Scope) -> bool:
        """True if a key of this scope may call a route needing `needed`."""
        return self.rank >= needed.rank


_ORDER = (Scope.READ, Scope.SEND, Scope.MANAGE, Scope.ADMIN)

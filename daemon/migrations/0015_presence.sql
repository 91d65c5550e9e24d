-- Agents and presence (issue 13, seed 002 §13 and §20): an agent is an extension with its name
-- and department, so presence lives on the extension row. Offline and do-not-disturb agents
-- receive no calls (handlers/calls/presence.py); a new extension starts online.

ALTER TABLE extensions
    ADD COLUMN presence text NOT NULL DEFAULT 'online'
        CHECK (presence IN ('online', 'offline', 'dnd')),
    ADD COLUMN presence_changed_at timestamptz NOT NULL DEFAULT now();

-- Extensions made before this migration have been online since they were created.
UPDATE extensions SET presence_changed_at = created_at;

-- The call engine's cache reads only the agents who are not online (PresenceCache.refresh).
CREATE INDEX extensions_not_online ON extensions (tenant_id, extension)
    WHERE presence <> 'online';

-- The event log (handlers/events): every event a tenant can follow, call and message alike,
-- with an increasing id the stream (GET /v1/events) resumes from. It is also the one outbox of
-- the signed webhooks: a statement adding events adds their webhook deliveries in the same
-- statement (trigger below), so an event is in both or in neither.

CREATE TABLE event_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,  -- = the webhook event id
    tenant_id   uuid NOT NULL,
    sp_id       text,                             -- message events: the message's SP ID
    type        text NOT NULL,
    extensions  text[] NOT NULL DEFAULT '{}',     -- call events: the extensions involved
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),  -- when it happened
    logged_at   timestamptz NOT NULL DEFAULT now()   -- when it was written (retention)
);
CREATE INDEX event_log_tenant ON event_log (tenant_id, id);

-- Ids at or below `floor` were deleted by retention: a client resuming from one of them gets
-- a `reset` event instead of a silent gap.
CREATE TABLE event_log_floor (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    floor bigint NOT NULL
);
INSERT INTO event_log_floor VALUES (true, 0);

-- Ids are taken in insert order but committed in any order. A writer holds this shared
-- advisory lock (never contended: only readers look at it, in pg_locks) from before its ids
-- are taken until it ends, so a reader seeing a missing id knows which transactions can still
-- commit it, waits for those, and then treats the id as rolled back (handlers/events/hub.py).
CREATE FUNCTION event_log_mark_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7401, 13);
    RETURN NULL;
END $$;

CREATE TRIGGER event_log_writer BEFORE INSERT ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_mark_writer();

-- The webhooks' deliveries of the events just added, and one wake-up per transaction for
-- every instance's stream (identical payloads within one transaction are delivered once).
CREATE FUNCTION event_log_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM added) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_outbox (event_id, tenant_id, webhook_id, event_type, payload, created_at)
    SELECT a.event_id, a.tenant_id, w.id, a.type, a.data, a.created_at
    FROM added a JOIN webhooks w ON w.tenant_id = a.tenant_id
                                AND (w.events = '{}' OR a.type = ANY (w.events));
    PERFORM pg_notify('telgate_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER event_log_fan_out AFTER INSERT ON event_log
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION event_log_added();

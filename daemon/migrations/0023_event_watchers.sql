-- The event log notifies `telgate_events` only while some instance has a stream open.
--
-- A transaction that has sent a NOTIFY holds a database-wide lock from its commit until its
-- commit record is flushed: notifying commits queue behind each other, one flush at a time.
-- Every statement adding events notified (migration 0013), so every single send's group
-- statement and every dispatcher round waited for the others' flushes; single sends were seen
-- waiting 100-180 ms for that lock (docs/performance.md). Only the followers of instances
-- with streams open read the notifications (handlers/events/hub.py); each of them keeps a row
-- here, keyed by the backend pid of its LISTEN connection, while it has streams (and a minute
-- after). A notification is only a wake-up: the followers also read the log every second.
CREATE TABLE event_watchers (
    pid integer PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- As in 0013 and 0021 (webhook deliveries of the events just added, planned with the
-- defaults), with the wake-up sent only when someone watches.
CREATE OR REPLACE FUNCTION event_log_added() RETURNS trigger LANGUAGE plpgsql
    SET enable_seqscan = on SET enable_bitmapscan = on
    SET enable_hashjoin = on SET enable_mergejoin = on
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM added) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_outbox (event_id, tenant_id, webhook_id, event_type, payload, created_at)
    SELECT a.event_id, a.tenant_id, w.id, a.type, a.data, a.created_at
    FROM added a JOIN webhooks w ON w.tenant_id = a.tenant_id
                                AND (w.events = '{}' OR a.type = ANY (w.events));
    IF EXISTS (SELECT 1 FROM event_watchers) THEN
        PERFORM pg_notify('telgate_events', '');
    END IF;
    RETURN NULL;
END $$;

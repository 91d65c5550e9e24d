-- SIP registrations live in the database so that a daemon restart keeps every unexpired
-- binding and any instance sharing the database finds a phone (DESIGN section 7). Each
-- instance follows changes in memory over LISTEN telgate_registrations; a notification
-- names the extension whose bindings to reload.

CREATE TABLE sip_registrations (
    tenant_id    uuid NOT NULL,
    extension    text NOT NULL,
    contact_uri  text NOT NULL,                  -- the Contact URI as registered
    transport    text NOT NULL CHECK (transport IN ('UDP', 'TCP', 'TLS')),
    host         text NOT NULL,                  -- where requests for the contact go
    port         integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    user_agent   text NOT NULL DEFAULT '',
    call_id      text NOT NULL,                  -- of the REGISTER (RFC 3261 §10.3 step 7)
    cseq         bigint NOT NULL,
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    position     integer NOT NULL DEFAULT 0,     -- registration order within the extension
    PRIMARY KEY (tenant_id, extension, contact_uri),
    FOREIGN KEY (tenant_id, extension) REFERENCES extensions (tenant_id, extension)
        ON DELETE CASCADE
);
CREATE INDEX sip_registrations_expiry ON sip_registrations (expires_at);

CREATE FUNCTION sip_registrations_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    -- Identical payloads within one transaction are delivered once.
    PERFORM pg_notify('telgate_registrations',
                      json_build_object('t', r.tenant_id, 'e', r.extension)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER sip_registrations_changed
    AFTER INSERT OR UPDATE OR DELETE ON sip_registrations
    FOR EACH ROW EXECUTE FUNCTION sip_registrations_notify();

-- Why a call ended (handlers/calls/cdr.py EndReason), beside who ended it.
ALTER TABLE call_records ADD COLUMN end_reason text NOT NULL DEFAULT 'normal';

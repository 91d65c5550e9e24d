-- Call recordings: one row per recorded call, written when recording starts and completed when
-- the call ends (status, size, digest). Searched by period, customer number and agent's
-- extension, internal calls excluded on request; kept until expires_at, then the retention
-- sweeper deletes file and row together.

CREATE TABLE recordings (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    call_id           uuid NOT NULL UNIQUE,   -- the call's id (its call record carries the same)
    sip_call_id       text NOT NULL,
    status            text NOT NULL CHECK (status IN ('recording', 'ok', 'failed', 'interrupted')),
    codec             text NOT NULL CHECK (codec IN ('PCMU', 'PCMA')),
    path              text NOT NULL,
    extension         text CHECK (extension ~ '^[0-9]{1,4}$'),   -- the agent
    customer          text CHECK (customer ~ '^[0-9]{3,15}$'),   -- the customer's number, digits
    internal          boolean NOT NULL DEFAULT false,
    started_at        timestamptz NOT NULL,
    ended_at          timestamptz,
    duration_seconds  double precision CHECK (duration_seconds >= 0),
    bytes             bigint CHECK (bytes >= 0),
    sha256            text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    error             text,
    expires_at        timestamptz NOT NULL
);
CREATE INDEX recordings_by_time ON recordings (tenant_id, started_at DESC, id DESC);
CREATE INDEX recordings_by_customer ON recordings (tenant_id, customer, started_at DESC);
CREATE INDEX recordings_by_extension ON recordings (tenant_id, extension, started_at DESC);
CREATE INDEX recordings_expiry ON recordings (expires_at);

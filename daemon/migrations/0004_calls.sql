-- Calls: each tenant's SIP domain, its extensions (내선번호, up to 4 digits) with digest
-- credentials stored as HA1 hashes, and the call records (CDR) the portals report from.

CREATE TABLE sip_domains (
    tenant_id   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    domain      text NOT NULL UNIQUE CHECK (domain ~ '^[a-z0-9.-]{1,253}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- HA1 = H(extension:realm:password) for MD5 and SHA-256 (RFC 8760), never the password.
CREATE TABLE extensions (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    extension   text NOT NULL CHECK (extension ~ '^[0-9]{1,4}$'),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 100),
    realm       text NOT NULL,
    ha1_md5     text NOT NULL,
    ha1_sha256  text NOT NULL,
    caller_id   text CHECK (caller_id ~ '^[0-9]{3,12}$'),
    rid         text CHECK (rid ~ '^[0-9]{3,12}$'),
    use_rid     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, extension)
);

CREATE TABLE call_records (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sip_call_id   text NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('incoming', 'outgoing', 'internal')),
    internal      boolean NOT NULL DEFAULT false,
    class         text NOT NULL CHECK (class IN ('outgoing', 'outgoing_failed', 'incoming',
                                                 'missed', 'busy_missed', 'ended_before_answer')),
    caller        text NOT NULL,
    callee        text NOT NULL,
    did           text,
    extension     text,            -- the agent's extension: who answered, or who called out
    peer_extension text,           -- internal calls: the other extension
    trunk         text,
    started_at    timestamptz NOT NULL,
    ringing_at    timestamptz,
    answered_at   timestamptz,
    ended_at      timestamptz NOT NULL,
    talk_seconds  double precision NOT NULL DEFAULT 0,
    final_status  integer NOT NULL,
    hangup_by     text NOT NULL CHECK (hangup_by IN ('caller', 'callee', 'system'))
);
CREATE INDEX call_records_by_time ON call_records (tenant_id, started_at DESC, id DESC);

-- Tenants (the portal's account, 사업자), their SP IDs (sending sub-accounts), API keys and the
-- audit trail every later capability writes to.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name <> '' AND length(name) <= 100),
    created_at  timestamptz NOT NULL DEFAULT now(),
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE sp_ids (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sp_id       text NOT NULL CHECK (sp_id ~ '^[A-Za-z0-9_.-]{1,32}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sp_id)
);
-- An SP ID names one sending account carrier-wide: it belongs to one tenant only.
CREATE UNIQUE INDEX sp_ids_sp_id_key ON sp_ids (sp_id);

-- Keys are 256-bit random secrets, so one SHA-256 is a sound hash (no stretching needed:
-- there is no low-entropy password to brute-force); `prefix` identifies a key to humans.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sp_id        text,
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    FOREIGN KEY (tenant_id, sp_id) REFERENCES sp_ids (tenant_id, sp_id) ON DELETE CASCADE
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid REFERENCES tenants (id) ON DELETE CASCADE,
    actor       text NOT NULL,          -- 'key:<prefix>', 'cli:<user>', 'system'
    action      text NOT NULL,          -- 'tenant.create', 'sender_number.register', ...
    subject     text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);

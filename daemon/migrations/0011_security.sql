-- Security hardening (issue 18): key scopes, an append-only audit trail that says who (key id
-- and label) acted from which address, and the shared counters of the daily send budgets.

-- A key's scope: read < send < manage < admin (handlers/api/scopes.py). Keys made before
-- scopes existed keep the full rights they had.
ALTER TABLE api_keys
    ADD COLUMN scope text NOT NULL DEFAULT 'admin'
        CHECK (scope IN ('read', 'send', 'manage', 'admin'));

-- Who acted: the key (its id and label at the time; the label may change later) and the
-- client address the request came from. `actor` stays the short form ('key:<prefix>', 'cli:…').
ALTER TABLE audit_log
    ADD COLUMN key_id uuid,
    ADD COLUMN key_label text,
    ADD COLUMN address inet;
CREATE INDEX audit_log_tenant_action_at ON audit_log (tenant_id, action, at);

-- The trail outlives the tenant it is about: no cascade may delete it.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_tenant_id_fkey;

-- Append-only, whatever role the daemon connects as (a trigger also binds the owner and a
-- superuser; only disabling it on purpose, with `ALTER TABLE … DISABLE TRIGGER`, lifts it).
CREATE FUNCTION telgate_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION telgate_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_audit_append_only();

-- Budgets several instances share: one row per tenant, budget and window (a UTC day for
-- `daily_recipients`), raised atomically only while it stays within the limit.
CREATE TABLE rate_usage (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    budget      text NOT NULL,
    window_start timestamptz NOT NULL,
    used        bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (tenant_id, budget, window_start)
);

-- Live control-API instances (a heartbeat every few seconds): each one's local rate buckets
-- refill at the tenant's rate divided by their number.
CREATE TABLE api_instances (
    id       uuid PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);

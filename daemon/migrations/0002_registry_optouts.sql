-- Sender-number registry (발신번호 사전등록, seed 000) and the 080 opt-out list (seed 002).
-- Every change notifies channel 'telgate_numbers' so that each daemon's in-memory index
-- follows within a second (handlers/registry/index.py).

ALTER TABLE tenants
    ADD COLUMN sender_quota integer NOT NULL DEFAULT 30 CHECK (sender_quota >= 0),
    ADD COLUMN optout_scope text NOT NULL DEFAULT 'all' CHECK (optout_scope IN ('all', 'ad'));

CREATE TABLE sender_numbers (
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number         text NOT NULL CHECK (number ~ '^[0-9]{3,12}$'),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    registered_by  text NOT NULL,
    PRIMARY KEY (tenant_id, number)
);
CREATE INDEX sender_numbers_by_time ON sender_numbers (tenant_id, registered_at, number);

CREATE TABLE opt_outs (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      text NOT NULL CHECK (number ~ '^[0-9]{3,12}$'),
    source      text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'import', 'mo_080', 'cli')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    PRIMARY KEY (tenant_id, number)
);
CREATE INDEX opt_outs_by_time ON opt_outs (tenant_id, created_at, number);

-- One notification per statement and tenant: the numbers themselves when few (so listeners
-- patch their index), else a request to reload that tenant (payloads are capped at 8000 bytes).
CREATE FUNCTION telgate_notify_numbers() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rec record;
    kind text := CASE TG_TABLE_NAME WHEN 'sender_numbers' THEN 's' ELSE 'o' END;
    op text := CASE TG_OP WHEN 'INSERT' THEN '+' ELSE '-' END;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR rec IN SELECT tenant_id, array_agg(number) AS numbers, count(*) AS n
                   FROM new_rows GROUP BY tenant_id LOOP
            PERFORM pg_notify('telgate_numbers', json_build_object(
                'k', kind, 't', rec.tenant_id, 'op', op,
                'n', CASE WHEN rec.n <= 200 THEN rec.numbers END)::text);
        END LOOP;
    ELSE
        FOR rec IN SELECT tenant_id, array_agg(number) AS numbers, count(*) AS n
                   FROM old_rows GROUP BY tenant_id LOOP
            PERFORM pg_notify('telgate_numbers', json_build_object(
                'k', kind, 't', rec.tenant_id, 'op', op,
                'n', CASE WHEN rec.n <= 200 THEN rec.numbers END)::text);
        END LOOP;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER sender_numbers_ins AFTER INSERT ON sender_numbers
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION telgate_notify_numbers();
CREATE TRIGGER sender_numbers_del AFTER DELETE ON sender_numbers
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION telgate_notify_numbers();
CREATE TRIGGER opt_outs_ins AFTER INSERT ON opt_outs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION telgate_notify_numbers();
CREATE TRIGGER opt_outs_del AFTER DELETE ON opt_outs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION telgate_notify_numbers();

CREATE FUNCTION telgate_notify_scope() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.optout_scope IS DISTINCT FROM OLD.optout_scope THEN
        PERFORM pg_notify('telgate_numbers',
                          json_build_object('k', 'scope', 't', NEW.id, 'scope', NEW.optout_scope)::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_scope AFTER UPDATE OF optout_scope ON tenants
    FOR EACH ROW EXECUTE FUNCTION telgate_notify_scope();

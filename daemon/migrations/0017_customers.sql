-- The customer directory (issue 13, seed 002 §13-2): the portal's customers as it knows them,
-- one name per number and tenant, so the incoming-call pop-up can show who is calling. The
-- event log's writer looks names up in the same statement that logs a call event
-- (handlers/events/log.py), by (tenant_id, number): the primary key is that index.

CREATE TABLE customers (
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number     text NOT NULL CHECK (number ~ '^[0-9]{3,12}$'),  -- canonical national digits
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, number)
);

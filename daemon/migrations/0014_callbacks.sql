-- The callback list (issue 12, seed 002 §15 콜백): a caller who reached the callback IVR
-- (outside business hours, no agent available, no answer) left a number to be called back on;
-- agents work through the open entries and mark them done, one or all of a customer's.

CREATE TABLE callbacks (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- The call record's id. No foreign key: the entry is stored while the call is still in
    -- the IVR, before its call record is written.
    call_id       uuid,
    did           text,                 -- the DID dialled (digits)
    caller        text NOT NULL,        -- the caller ID as received, e.g. 'anonymous'
    number        text NOT NULL CHECK (number ~ '^[0-9]{2,20}$'),  -- to call back on
    trigger       text NOT NULL CHECK (trigger IN ('closed', 'no_agent', 'no_answer')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    completed_by  text,                 -- the actor who marked it done (key:tgk_…)
    CHECK ((completed_at IS NULL) = (completed_by IS NULL))
);
-- The list by period, newest first (status and DID filter these rows).
CREATE INDEX callbacks_by_time ON callbacks (tenant_id, created_at DESC, id DESC);
-- One customer's entries (the number filter, completing all of a customer's open entries).
CREATE INDEX callbacks_by_number ON callbacks (tenant_id, number, created_at DESC);

-- Messaging: messages and their recipients (the durable SMPP queue), templates, idempotency,
-- delivery-receipt inbox, MO messages, webhooks with an outbox.

ALTER TABLE tenants
    ADD COLUMN sms_max_bytes integer NOT NULL DEFAULT 90 CHECK (sms_max_bytes BETWEEN 40 AND 140),
    -- The advertising opt-out line, e.g. '무료거부 080-123-4567'; its digits route MO opt-outs.
    ADD COLUMN optout_line text,
    ADD COLUMN optout_number text CHECK (optout_number ~ '^080[0-9]{7,8}$');
CREATE UNIQUE INDEX tenants_optout_number ON tenants (optout_number) WHERE optout_number IS NOT NULL;

CREATE TABLE templates (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 100),
    text        text NOT NULL,
    subject     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE messages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sp_id               text,
    sender              text NOT NULL,
    type                text NOT NULL CHECK (type IN ('sms', 'lms', 'mms')),
    subject             text,
    text                text NOT NULL,          -- after ad marks, before variables
    ad                  boolean NOT NULL DEFAULT false,
    test                boolean NOT NULL DEFAULT false,
    template_id         uuid REFERENCES templates (id) ON DELETE SET NULL,
    send_at             timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    canceled_at         timestamptz,
    dispatch_started_at timestamptz,            -- first recipient claimed: no more changes
    recipient_count     integer NOT NULL
);
CREATE INDEX messages_tenant_created ON messages (tenant_id, created_at DESC, id);

-- One row per recipient; the dispatcher's queue. States:
--   queued → claimed (taken by an instance, submit on the wire or about to be)
--          → submitted (submit_sm_resp OK, carrier id stored) → delivered | failed | expired
--   queued/claimed → failed (permanent SMPP error) ; rejected (opted out, never queued) ;
--   canceled (scheduled message canceled before dispatch).
CREATE TABLE recipients (
    message_id        uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx               integer NOT NULL,
    tenant_id         uuid NOT NULL,
    number            text NOT NULL,
    name              text,
    text              text,                    -- rendered text when it differs from the message's
    state             text NOT NULL CHECK (state IN ('queued', 'claimed', 'submitted', 'delivered',
                                                     'failed', 'expired', 'rejected', 'canceled')),
    reason            text,
    next_attempt_at   timestamptz NOT NULL,
    attempts          integer NOT NULL DEFAULT 0,
    claimed_by        integer,
    in_doubt          boolean NOT NULL DEFAULT false,
    carrier           text,
    carrier_msg_id    text,
    carrier_msg_id_alt text,                   -- the same id read in the other base (hex/decimal)
    smpp_status       integer,
    dlr_stat          text,
    dlr_err           text,
    submitted_at      timestamptz,
    done_at           timestamptz,
    PRIMARY KEY (message_id, idx)
);
CREATE INDEX recipients_due ON recipients (next_attempt_at) WHERE state = 'queued';
CREATE INDEX recipients_claimed ON recipients (claimed_by) WHERE state = 'claimed';
CREATE INDEX recipients_carrier_id ON recipients (carrier, carrier_msg_id) WHERE carrier_msg_id IS NOT NULL;
CREATE INDEX recipients_carrier_alt ON recipients (carrier, carrier_msg_id_alt) WHERE carrier_msg_id_alt IS NOT NULL;
CREATE INDEX recipients_submitted ON recipients (submitted_at) WHERE state = 'submitted';
CREATE INDEX recipients_number ON recipients (tenant_id, number);

CREATE TABLE idempotency_keys (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Receipts are stored here before deliver_sm_resp is sent, then matched to recipients.
CREATE TABLE dlr_inbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier      text NOT NULL,
    msg_id       text NOT NULL,
    stat         text,
    err          text,
    done_at      timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE mo_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants (id) ON DELETE CASCADE,
    carrier      text NOT NULL,
    source       text NOT NULL,
    destination  text NOT NULL,
    text         text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    opt_out      boolean NOT NULL DEFAULT false
);
CREATE INDEX mo_messages_tenant ON mo_messages (tenant_id, received_at);

CREATE TABLE webhooks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url         text NOT NULL,
    secret      text NOT NULL,
    events      text[] NOT NULL DEFAULT '{}',   -- empty: every event
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Events to deliver (at least once): written in the transaction of the change they report.
CREATE TABLE webhook_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL,
    webhook_id      uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE delivered_at IS NULL;

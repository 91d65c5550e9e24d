-- Verification codes (login codes sent by SMS) and the dispatch lanes that keep them fast.

-- Lanes of the dispatch queue, claimed in this order: 0 verification codes, 1 single and small
-- sends, 2 bulk sends. A bulk send waiting cannot hold a code back.
ALTER TABLE recipients ADD COLUMN lane smallint NOT NULL DEFAULT 1 CHECK (lane BETWEEN 0 AND 2);
DROP INDEX recipients_due;
CREATE INDEX recipients_due ON recipients (lane, next_attempt_at) WHERE state = 'queued';

-- Keys the daemon derives secrets from, made once per database so that every instance
-- sharing it agrees (the verification codes' HMAC key).
CREATE TABLE server_keys (
    name        text PRIMARY KEY,
    key         bytea NOT NULL CHECK (length(key) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One verification: a code sent to `number`, kept only as HMAC-SHA256(key, id || code).
CREATE TABLE verifications (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    sp_id         text,
    number        text NOT NULL,
    sender        text NOT NULL,
    purpose       text NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'approved', 'failed', 'canceled',
                                                  'expired')),
    reason        text,                      -- why it failed or was canceled
    code_hash     bytea,                     -- NULL once closed: nothing left to compare
    expires_at    timestamptz NOT NULL,
    sends         integer NOT NULL DEFAULT 1,
    last_sent_at  timestamptz NOT NULL,
    message_id    uuid,                      -- the message carrying the current code
    created_at    timestamptz NOT NULL,
    closed_at     timestamptz
);
CREATE INDEX verifications_open ON verifications (tenant_id, number, purpose) WHERE status = 'pending';
CREATE INDEX verifications_tenant_created ON verifications (tenant_id, created_at);

-- Every code sent (first sends and resends), for the per-number and per-tenant caps.
CREATE TABLE verification_sends (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number      text NOT NULL,
    sent_at     timestamptz NOT NULL
);
CREATE INDEX verification_sends_number ON verification_sends (tenant_id, number, sent_at);
CREATE INDEX verification_sends_tenant ON verification_sends (tenant_id, sent_at);

-- Wrong codes per subject (tenant + number): five lock the subject for ten minutes.
CREATE TABLE verification_subjects (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number        text NOT NULL,
    failures      integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    PRIMARY KEY (tenant_id, number)
);

-- A message that carries a verification code: left out of history, its rendered text erased
-- once the verification closes.
ALTER TABLE messages ADD COLUMN verification_id uuid;

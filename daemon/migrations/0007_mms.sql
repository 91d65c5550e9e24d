-- MMS over MM7: the images of a message, MMS recipients as their own queue (claimed by the
-- MM7 dispatcher, never by the SMPP one), the MMSC's status codes, and an inbox of delivery
-- reports that arrive before the SubmitRsp that names their message id was stored.

ALTER TABLE messages
    ADD COLUMN image_count integer NOT NULL DEFAULT 0,
    ADD COLUMN image_bytes integer NOT NULL DEFAULT 0;

CREATE TABLE message_images (
    message_id  uuid NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    idx         integer NOT NULL,
    content     bytea NOT NULL,
    width       integer NOT NULL,
    height      integer NOT NULL,
    PRIMARY KEY (message_id, idx)
);

-- A tenant may ask that an MMS whose image the MMSC refuses goes out as LMS (text only).
ALTER TABLE tenants ADD COLUMN mms_lms_fallback boolean NOT NULL DEFAULT false;

ALTER TABLE recipients
    ADD COLUMN mms boolean NOT NULL DEFAULT false,   -- true: the MM7 dispatcher's
    ADD COLUMN mm7_status integer;                   -- the MMSC's StatusCode when refused
CREATE INDEX recipients_due_mms ON recipients (next_attempt_at) WHERE state = 'queued' AND mms;

CREATE TABLE mm7_report_inbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    carrier      text NOT NULL,
    msg_id       text NOT NULL,
    mm_status    text NOT NULL,
    status_text  text,
    done_at      timestamptz,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mm7_report_inbox_msg ON mm7_report_inbox (carrier, msg_id);

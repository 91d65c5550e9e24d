-- Statistics rollups (issue 14): a year of statistics read a million call records (0.6-0.9 s)
-- and five million message recipients (1-9 s); these tables hold the same counts per Korean
-- month, day, hour and hour of the day per month, so that a year is a few thousand rows.
-- Every answer stays exact: a rollup holds exactly the rows it has counted, the rest is read
-- live in the same statement (handlers/calls/search.py, handlers/messages/history.py).

-- Calls are written once (the CDR writer's COPY, a batch per statement) and never changed:
-- statement-level triggers add each statement's rows to the rollups in the same transaction,
-- and take deleted (or, should it ever happen, changed) ones out. Days and months keep every
-- dimension a statistics query groups or filters by but the hour; hours, hours of the day per
-- month and (narrow) days keep the department, class, direction and internal, so that a year
-- of those is a few thousand rows too. What no rollup keeps is read live.
CREATE TABLE call_stats_daily (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day           date NOT NULL,              -- the Korean day the calls started
    extension     text,                       -- the agent
    department_id uuid,
    number        text,                       -- the tenant's own number (search.OUR_NUMBER)
    class         text NOT NULL,
    direction     text NOT NULL,
    internal      boolean NOT NULL,
    calls         bigint NOT NULL,
    talk_seconds  numeric NOT NULL,           -- exact: a sum of doubles depends on its order
    UNIQUE NULLS NOT DISTINCT (tenant_id, day, extension, department_id, number, class,
                               direction, internal)
);

CREATE TABLE call_stats_monthly (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month         date NOT NULL,              -- the first day of the Korean month
    extension     text,
    department_id uuid,
    number        text,
    class         text NOT NULL,
    direction     text NOT NULL,
    internal      boolean NOT NULL,
    calls         bigint NOT NULL,
    talk_seconds  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, month, extension, department_id, number, class,
                               direction, internal)
);

CREATE TABLE call_stats_hourly (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL,       -- the hour the calls started (a Korean hour)
    department_id uuid,
    class         text NOT NULL,
    direction     text NOT NULL,
    internal      boolean NOT NULL,
    calls         bigint NOT NULL,
    talk_seconds  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, hour, department_id, class, direction, internal)
);

CREATE TABLE call_stats_daily_narrow (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day           date NOT NULL,              -- the Korean day the calls started
    department_id uuid,
    class         text NOT NULL,
    direction     text NOT NULL,
    internal      boolean NOT NULL,
    calls         bigint NOT NULL,
    talk_seconds  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, day, department_id, class, direction, internal)
);

CREATE TABLE call_stats_month_hours (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month         date NOT NULL,              -- the first day of the Korean month
    hour          smallint NOT NULL,          -- the Korean hour of the day, 0-23
    department_id uuid,
    class         text NOT NULL,
    direction     text NOT NULL,
    internal      boolean NOT NULL,
    calls         bigint NOT NULL,
    talk_seconds  numeric NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, month, hour, department_id, class, direction,
                               internal)
);

-- One hour's worth of calls of one kind, to add (positive) or take out (negative).
CREATE TYPE call_stats_delta AS (
    tenant_id uuid, hour timestamptz, extension text, department_id uuid, number text,
    class text, direction text, internal boolean, calls bigint, talk_seconds numeric
);

-- Adds deltas to the five rollups. Keys are taken in order, so two concurrent writers lock
-- rollup rows in the same order (no deadlock). A tenant's deletion cascades to its records
-- and to its rollups in an order of PostgreSQL's choosing: its deltas are dropped, not
-- written back into a bucket of a tenant that is going. Buckets left empty are deleted.
CREATE FUNCTION telgate_call_stats_apply(deltas call_stats_delta[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    deltas := ARRAY(SELECT d FROM unnest(deltas) d
                    WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = d.tenant_id));
    INSERT INTO call_stats_monthly AS s (tenant_id, month, extension, department_id, number,
                                         class, direction, internal, calls, talk_seconds)
    SELECT tenant_id, date_trunc('month', hour AT TIME ZONE 'Asia/Seoul')::date, extension,
           department_id, number, class, direction, internal, sum(calls), sum(talk_seconds)
    FROM unnest(deltas) GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (tenant_id, month, extension, department_id, number, class, direction,
                 internal)
    DO UPDATE SET calls = s.calls + excluded.calls,
                  talk_seconds = s.talk_seconds + excluded.talk_seconds;
    INSERT INTO call_stats_daily AS s (tenant_id, day, extension, department_id, number,
                                       class, direction, internal, calls, talk_seconds)
    SELECT tenant_id, (hour AT TIME ZONE 'Asia/Seoul')::date, extension, department_id,
           number, class, direction, internal, sum(calls), sum(talk_seconds)
    FROM unnest(deltas) GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (tenant_id, day, extension, department_id, number, class, direction,
                 internal)
    DO UPDATE SET calls = s.calls + excluded.calls,
                  talk_seconds = s.talk_seconds + excluded.talk_seconds;
    INSERT INTO call_stats_daily_narrow AS s (tenant_id, day, department_id, class, direction,
                                              internal, calls, talk_seconds)
    SELECT tenant_id, (hour AT TIME ZONE 'Asia/Seoul')::date, department_id, class,
           direction, internal, sum(calls), sum(talk_seconds)
    FROM unnest(deltas) GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (tenant_id, day, department_id, class, direction, internal)
    DO UPDATE SET calls = s.calls + excluded.calls,
                  talk_seconds = s.talk_seconds + excluded.talk_seconds;
    INSERT INTO call_stats_month_hours AS s (tenant_id, month, hour, department_id, class,
                                             direction, internal, calls, talk_seconds)
    SELECT tenant_id, date_trunc('month', hour AT TIME ZONE 'Asia/Seoul')::date,
           extract(hour FROM hour AT TIME ZONE 'Asia/Seoul'), department_id, class,
           direction, internal, sum(calls), sum(talk_seconds)
    FROM unnest(deltas) GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (tenant_id, month, hour, department_id, class, direction, internal)
    DO UPDATE SET calls = s.calls + excluded.calls,
                  talk_seconds = s.talk_seconds + excluded.talk_seconds;
    INSERT INTO call_stats_hourly AS s (tenant_id, hour, department_id, class, direction,
                                        internal, calls, talk_seconds)
    SELECT tenant_id, hour, department_id, class, direction, internal, sum(calls),
           sum(talk_seconds)
    FROM unnest(deltas) GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (tenant_id, hour, department_id, class, direction, internal)
    DO UPDATE SET calls = s.calls + excluded.calls,
                  talk_seconds = s.talk_seconds + excluded.talk_seconds;
    IF EXISTS (SELECT 1 FROM unnest(deltas) WHERE calls < 0) THEN
        DELETE FROM call_stats_monthly s USING unnest(deltas) d
        WHERE s.tenant_id = d.tenant_id AND s.calls = 0
          AND s.month = date_trunc('month', d.hour AT TIME ZONE 'Asia/Seoul')::date;
        DELETE FROM call_stats_daily s USING unnest(deltas) d
        WHERE s.tenant_id = d.tenant_id AND s.calls = 0
          AND s.day = (d.hour AT TIME ZONE 'Asia/Seoul')::date;
        DELETE FROM call_stats_daily_narrow s USING unnest(deltas) d
        WHERE s.tenant_id = d.tenant_id AND s.calls = 0
          AND s.day = (d.hour AT TIME ZONE 'Asia/Seoul')::date;
        DELETE FROM call_stats_month_hours s USING unnest(deltas) d
        WHERE s.tenant_id = d.tenant_id AND s.calls = 0
          AND s.month = date_trunc('month', d.hour AT TIME ZONE 'Asia/Seoul')::date;
        DELETE FROM call_stats_hourly s USING unnest(deltas) d
        WHERE s.tenant_id = d.tenant_id AND s.hour = d.hour AND s.calls = 0;
    END IF;
END $$;

-- The statement's records as hourly deltas (transition tables are only visible here).
CREATE FUNCTION telgate_call_stats_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        PERFORM telgate_call_stats_apply(ARRAY(
            SELECT k::call_stats_delta FROM (
                SELECT tenant_id, date_trunc('hour', started_at), extension, department_id,
                       CASE direction WHEN 'incoming' THEN did WHEN 'outgoing' THEN caller END,
                       class, direction, internal, -count(*), -sum(talk_seconds::numeric)
                FROM old_rows GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) k));
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM telgate_call_stats_apply(ARRAY(
            SELECT k::call_stats_delta FROM (
                SELECT tenant_id, date_trunc('hour', started_at), extension, department_id,
                       CASE direction WHEN 'incoming' THEN did WHEN 'outgoing' THEN caller END,
                       class, direction, internal, count(*), sum(talk_seconds::numeric)
                FROM new_rows GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) k));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER call_records_stats_insert AFTER INSERT ON call_records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_call_stats_changed();
CREATE TRIGGER call_records_stats_update AFTER UPDATE ON call_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_call_stats_changed();
CREATE TRIGGER call_records_stats_delete AFTER DELETE ON call_records
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_call_stats_changed();

CREATE FUNCTION telgate_call_stats_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE call_stats_daily, call_stats_monthly, call_stats_hourly, call_stats_daily_narrow,
             call_stats_month_hours;
    RETURN NULL;
END $$;
CREATE TRIGGER call_records_stats_truncate AFTER TRUNCATE ON call_records
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_call_stats_truncated();

-- The records written before this migration, a month at a time.
DO $$
DECLARE
    month timestamptz;
BEGIN
    FOR month IN SELECT DISTINCT date_trunc('month', started_at) FROM call_records LOOP
        PERFORM telgate_call_stats_apply(ARRAY(
            SELECT k::call_stats_delta FROM (
                SELECT tenant_id, date_trunc('hour', started_at), extension, department_id,
                       CASE direction WHEN 'incoming' THEN did WHEN 'outgoing' THEN caller END,
                       class, direction, internal, count(*), sum(talk_seconds::numeric)
                FROM call_records
                WHERE started_at >= month AND started_at < month + interval '1 month'
                GROUP BY 1, 2, 3, 4, 5, 6, 7, 8) k));
    END LOOP;
END $$;

-- The record search filters by Korean weekday and hour (GET /v1/cdrs?weekday=1,2,3,4,5&
-- hour_from=9&hour_to=17). Without statistics on those expressions the planner guessed 49 of
-- a year's million records would match, not 27,000, and read them all to sort the newest
-- page (140 ms) instead of walking the time index backwards until the page is full (1 ms).
CREATE STATISTICS call_records_korean_time
    ON (extract(hour FROM (started_at AT TIME ZONE 'Asia/Seoul'))::int),
       (extract(isodow FROM (started_at AT TIME ZONE 'Asia/Seoul'))::int)
    FROM call_records;
ANALYZE call_records;

-- Messages change after they are written: a recipient's state moves on with the carrier's
-- answer (a receipt can come days later), so a trigger per recipient would tax every send
-- and every receipt. Instead a periodic job (handlers/messages/rollup.py) rolls up the
-- recipients that have reached a final state (delivered, failed, expired, rejected,
-- canceled: no code moves a recipient out of one) and marks their message in the same
-- transaction: `stats_rolled`, what it added in `stats_counts`, and in `stats_pending` the
-- recipients it left out because they were not final yet (a bulk send's few receipts that
-- take days). A later round folds those in as they become final. Statistics read the
-- rollups, plus from the tables every recipient of a message not rolled up and the pending
-- recipients of one that is, so each recipient is counted once whether or not the job has
-- reached it.
ALTER TABLE messages ADD COLUMN stats_rolled boolean NOT NULL DEFAULT false;
-- {messages, recipients, sent, delivered, failed, expired, rejected, canceled}, as added
ALTER TABLE messages ADD COLUMN stats_counts integer[];
-- the indexes (idx) of the recipients not rolled up yet; NULL when none
ALTER TABLE messages ADD COLUMN stats_pending integer[];

-- What statistics read live: messages not rolled up yet, rolled ones with pending recipients,
-- and any message at a period's ragged edges (a period from 10:30 reads 10:30-11:00 from the
-- tables). The first two are small (the last days' sends); the first also feeds the job.
CREATE INDEX messages_stats_unrolled ON messages (tenant_id, send_at, id)
    WHERE NOT stats_rolled AND NOT test;
CREATE INDEX messages_stats_pending ON messages (tenant_id, send_at, id)
    WHERE stats_pending IS NOT NULL;
CREATE INDEX messages_tenant_send_at ON messages (tenant_id, send_at);

CREATE TABLE message_stats_hourly (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL,       -- the hour send_at is in (a Korean hour)
    type          text NOT NULL,
    sp_id         text,
    department_id uuid,
    messages      bigint NOT NULL,
    recipients    bigint NOT NULL,
    sent          bigint NOT NULL,            -- reached the carrier (submitted_at set)
    delivered     bigint NOT NULL,
    failed        bigint NOT NULL,
    expired       bigint NOT NULL,
    rejected      bigint NOT NULL,
    canceled      bigint NOT NULL,
    images        bigint NOT NULL,
    image_bytes   bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, hour, type, sp_id, department_id)
);

CREATE TABLE message_stats_daily (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day           date NOT NULL,              -- the Korean day send_at is in
    type          text NOT NULL,
    sp_id         text,
    department_id uuid,
    messages      bigint NOT NULL,
    recipients    bigint NOT NULL,
    sent          bigint NOT NULL,
    delivered     bigint NOT NULL,
    failed        bigint NOT NULL,
    expired       bigint NOT NULL,
    rejected      bigint NOT NULL,
    canceled      bigint NOT NULL,
    images        bigint NOT NULL,
    image_bytes   bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, day, type, sp_id, department_id)
);

CREATE TABLE message_stats_month_hours (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    month         date NOT NULL,              -- the first day of the Korean month
    hour          smallint NOT NULL,          -- the Korean hour of the day, 0-23
    type          text NOT NULL,
    sp_id         text,
    department_id uuid,
    messages      bigint NOT NULL,
    recipients    bigint NOT NULL,
    sent          bigint NOT NULL,
    delivered     bigint NOT NULL,
    failed        bigint NOT NULL,
    expired       bigint NOT NULL,
    rejected      bigint NOT NULL,
    canceled      bigint NOT NULL,
    images        bigint NOT NULL,
    image_bytes   bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, month, hour, type, sp_id, department_id)
);

-- A rolled message as it was counted.
CREATE TYPE message_stats_rolled AS (
    tenant_id uuid, send_at timestamptz, type text, sp_id text, department_id uuid,
    counts integer[], image_count integer, image_bytes integer
);

-- Takes rolled messages back out of the rollups (by their stored `stats_counts`); empty
-- buckets are deleted. UPDATE only, for the reason given for calls above.
CREATE FUNCTION telgate_message_stats_take_out(rolled message_stats_rolled[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE message_stats_hourly s SET
        messages = s.messages - d.messages, recipients = s.recipients - d.recipients,
        sent = s.sent - d.sent, delivered = s.delivered - d.delivered,
        failed = s.failed - d.failed, expired = s.expired - d.expired,
        rejected = s.rejected - d.rejected, canceled = s.canceled - d.canceled,
        images = s.images - d.images, image_bytes = s.image_bytes - d.image_bytes
    FROM (SELECT tenant_id, date_trunc('hour', send_at) AS hour, type, sp_id, department_id,
                 sum(counts[1]) AS messages, sum(counts[2]) AS recipients,
                 sum(counts[3]) AS sent, sum(counts[4]) AS delivered,
                 sum(counts[5]) AS failed, sum(counts[6]) AS expired,
                 sum(counts[7]) AS rejected, sum(counts[8]) AS canceled,
                 sum(counts[1] * image_count) AS images,
                 sum(counts[1]::bigint * image_bytes) AS image_bytes
          FROM unnest(rolled) GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5) d
    WHERE s.tenant_id = d.tenant_id AND s.hour = d.hour AND s.type = d.type
      AND s.sp_id IS NOT DISTINCT FROM d.sp_id
      AND s.department_id IS NOT DISTINCT FROM d.department_id;
    DELETE FROM message_stats_hourly s
    USING (SELECT DISTINCT tenant_id, date_trunc('hour', send_at) AS hour FROM unnest(rolled)) d
    WHERE s.tenant_id = d.tenant_id AND s.hour = d.hour AND s.recipients = 0;
    UPDATE message_stats_daily s SET
        messages = s.messages - d.messages, recipients = s.recipients - d.recipients,
        sent = s.sent - d.sent, delivered = s.delivered - d.delivered,
        failed = s.failed - d.failed, expired = s.expired - d.expired,
        rejected = s.rejected - d.rejected, canceled = s.canceled - d.canceled,
        images = s.images - d.images, image_bytes = s.image_bytes - d.image_bytes
    FROM (SELECT tenant_id, (send_at AT TIME ZONE 'Asia/Seoul')::date AS day, type, sp_id,
                 department_id, sum(counts[1]) AS messages, sum(counts[2]) AS recipients,
                 sum(counts[3]) AS sent, sum(counts[4]) AS delivered,
                 sum(counts[5]) AS failed, sum(counts[6]) AS expired,
                 sum(counts[7]) AS rejected, sum(counts[8]) AS canceled,
                 sum(counts[1] * image_count) AS images,
                 sum(counts[1]::bigint * image_bytes) AS image_bytes
          FROM unnest(rolled) GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5) d
    WHERE s.tenant_id = d.tenant_id AND s.day = d.day AND s.type = d.type
      AND s.sp_id IS NOT DISTINCT FROM d.sp_id
      AND s.department_id IS NOT DISTINCT FROM d.department_id;
    DELETE FROM message_stats_daily s
    USING (SELECT DISTINCT tenant_id, (send_at AT TIME ZONE 'Asia/Seoul')::date AS day
           FROM unnest(rolled)) d
    WHERE s.tenant_id = d.tenant_id AND s.day = d.day AND s.recipients = 0;
    UPDATE message_stats_month_hours s SET
        messages = s.messages - d.messages, recipients = s.recipients - d.recipients,
        sent = s.sent - d.sent, delivered = s.delivered - d.delivered,
        failed = s.failed - d.failed, expired = s.expired - d.expired,
        rejected = s.rejected - d.rejected, canceled = s.canceled - d.canceled,
        images = s.images - d.images, image_bytes = s.image_bytes - d.image_bytes
    FROM (SELECT tenant_id, date_trunc('month', send_at AT TIME ZONE 'Asia/Seoul')::date
                     AS month, extract(hour FROM send_at AT TIME ZONE 'Asia/Seoul') AS hour,
                 type, sp_id, department_id, sum(counts[1]) AS messages,
                 sum(counts[2]) AS recipients, sum(counts[3]) AS sent,
                 sum(counts[4]) AS delivered, sum(counts[5]) AS failed,
                 sum(counts[6]) AS expired, sum(counts[7]) AS rejected,
                 sum(counts[8]) AS canceled, sum(counts[1] * image_count) AS images,
                 sum(counts[1]::bigint * image_bytes) AS image_bytes
          FROM unnest(rolled) GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6) d
    WHERE s.tenant_id = d.tenant_id AND s.month = d.month AND s.hour = d.hour
      AND s.type = d.type AND s.sp_id IS NOT DISTINCT FROM d.sp_id
      AND s.department_id IS NOT DISTINCT FROM d.department_id;
    DELETE FROM message_stats_month_hours s
    USING (SELECT DISTINCT tenant_id,
                  date_trunc('month', send_at AT TIME ZONE 'Asia/Seoul')::date AS month
           FROM unnest(rolled)) d
    WHERE s.tenant_id = d.tenant_id AND s.month = d.month AND s.recipients = 0;
END $$;

-- A rolled message that changes what it was counted as (its period, type, SP ID, department,
-- images, or `stats_rolled` set back to false) is taken out and read live again until the job
-- rolls it anew. The WHEN clause keeps this off the dispatcher's updates of messages that are
-- not rolled (all it updates: a message is rolled once every recipient is final).
CREATE FUNCTION telgate_message_stats_unroll() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM telgate_message_stats_take_out(ARRAY[ROW(
        OLD.tenant_id, OLD.send_at, OLD.type, OLD.sp_id, OLD.department_id, OLD.stats_counts,
        OLD.image_count, OLD.image_bytes)::message_stats_rolled]);
    NEW.stats_rolled := false;
    NEW.stats_counts := NULL;
    NEW.stats_pending := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER messages_stats_unroll BEFORE UPDATE ON messages FOR EACH ROW
    WHEN (OLD.stats_rolled AND (NOT NEW.stats_rolled
          OR (NEW.tenant_id, NEW.send_at, NEW.type, NEW.sp_id, NEW.department_id, NEW.test,
              NEW.image_count, NEW.image_bytes)
             IS DISTINCT FROM (OLD.tenant_id, OLD.send_at, OLD.type, OLD.sp_id,
                               OLD.department_id, OLD.test, OLD.image_count, OLD.image_bytes)))
    EXECUTE FUNCTION telgate_message_stats_unroll();

-- Deleted rolled messages (a scheduled send rewritten, a tenant deleted) leave the rollups.
CREATE FUNCTION telgate_message_stats_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM telgate_message_stats_take_out(ARRAY(
        SELECT ROW(o.tenant_id, o.send_at, o.type, o.sp_id, o.department_id, o.stats_counts,
                   o.image_count, o.image_bytes)::message_stats_rolled
        FROM old_rows o WHERE o.stats_rolled));
    RETURN NULL;
END $$;
CREATE TRIGGER messages_stats_delete AFTER DELETE ON messages
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION telgate_message_stats_deleted();

-- The rollups rest on final states being final. Should a recipient ever leave one (no code
-- does today: receipts only match `submitted` recipients), its message is taken out of the
-- rollups rather than left counted in its old state. The message row is updated even when it
-- is not rolled: the job rolls a message only if its row is the version it counted from, so
-- a round that counted the old state cannot roll it up afterwards. The WHEN clause is all the
-- dispatcher and the receipts pay: they only move recipients that are not final yet.
CREATE FUNCTION telgate_message_stats_reopened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE messages SET stats_rolled = false WHERE id = NEW.message_id;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_stats_reopened AFTER UPDATE OF state, submitted_at ON recipients
    FOR EACH ROW
    WHEN (OLD.state IN ('delivered', 'failed', 'expired', 'rejected', 'canceled')
          AND (NEW.state, NEW.submitted_at) IS DISTINCT FROM (OLD.state, OLD.submitted_at))
    EXECUTE FUNCTION telgate_message_stats_reopened();

-- The dispatcher's claim as a function whose plan cannot go wrong (issue 17's profile).
--
-- Right after a bulk send is accepted the planner still believes the queue holds a handful of
-- rows (statistics lag behind a COPY of 10,000 recipients), and planned each claim of 50 rows
-- as a bitmap scan of every queued row, a hash join and a sort spilled to disk: 83 ms a claim
-- with 90,000 queued, the busiest statement of a bulk send. The claim only ever wants the
-- first rows of `recipients_due` in index order, each joined to its message by primary key:
-- the settings below leave the planner that plan alone, whatever the statistics say.
CREATE FUNCTION telgate_claim(want integer, instance integer, max_lane integer)
RETURNS TABLE (message_id uuid, idx integer, tenant_id uuid, number text, text text,
               attempts integer, lane smallint, sender text, message_text text)
LANGUAGE sql VOLATILE
SET enable_sort = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    WITH due AS (
        SELECT r.message_id, r.idx FROM recipients r
        JOIN messages m ON m.id = r.message_id
        WHERE r.state = 'queued' AND r.next_attempt_at <= now()
          AND NOT r.mms  -- MMS recipients are the MM7 dispatcher's
          AND r.lane <= max_lane
        ORDER BY r.lane, r.next_attempt_at
        LIMIT want
        FOR UPDATE OF r SKIP LOCKED
        FOR SHARE OF m SKIP LOCKED
    ), claimed AS (
        UPDATE recipients r SET state = 'claimed', claimed_by = instance,
                                attempts = r.attempts + 1
        FROM due WHERE r.message_id = due.message_id AND r.idx = due.idx
        RETURNING r.message_id, r.idx, r.tenant_id, r.number, r.text, r.attempts, r.lane
    )
    SELECT c.message_id, c.idx, c.tenant_id, c.number, c.text, c.attempts, c.lane, m.sender,
           m.text
    FROM claimed c JOIN messages m ON m.id = c.message_id
$$;


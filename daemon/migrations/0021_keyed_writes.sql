-- The dispatcher's two busiest writes as functions whose plans cannot turn into table scans.
--
-- Both find their rows by key: outcomes by (message_id, idx), receipts by carrier id and then
-- by (message_id, idx). Planned from statistics taken while the tables were still small (a
-- fresh database, or the minute before autovacuum's next look at a table that grows fast),
-- they read every row instead: with single sends arriving at 700 a second, the receipt match
-- hash-joined a sequential scan of all 15,000 recipients to update 53 of them (6.2 ms a
-- match) and the outcome writer's `dispatch_started_at` update scanned every message (2.4 ms).
-- The settings below leave the planner index probes only (migration 0019's reasoning for the
-- claim), and PL/pgSQL keeps each plan for the session. A path so disabled still exists at a
-- cost of 10^10 (the receipt inbox has no index but its key, so it is scanned all the same),
-- and a plan costing that much is compiled by the JIT where PostgreSQL has one: 700 ms a
-- receipt match. So no JIT for these statements (nor for the claim).
CREATE FUNCTION telgate_store_submitted(mids uuid[], idxs integer[], carriers text[],
                                        ids text[], alts text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE recipients r SET state = 'submitted', carrier = u.carrier,
           carrier_msg_id = u.mid, carrier_msg_id_alt = u.alt,
           submitted_at = now(), claimed_by = NULL, smpp_status = 0
    FROM unnest(mids, idxs, carriers, ids, alts) AS u(message_id, idx, carrier, mid, alt)
    WHERE r.message_id = u.message_id AND r.idx = u.idx AND r.state = 'claimed';
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE messages m SET dispatch_started_at = now()
    FROM (SELECT DISTINCT unnest(mids) AS id) u
    WHERE m.id = u.id AND m.dispatch_started_at IS NULL;
    RETURN n;
END $$;

CREATE FUNCTION telgate_match_receipts(OUT matched bigint, OUT repeated bigint)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
BEGIN
    WITH found AS (
        -- each waiting receipt looks its recipients up by carrier id: the id as given, then
        -- its reading in the other base
        SELECT d.id AS did, d.stat, d.err, d.done_at, x.message_id, x.idx,
               x.state, x.dlr_stat, x.rank
        FROM dlr_inbox d CROSS JOIN LATERAL (
            SELECT r.message_id, r.idx, r.state, r.dlr_stat, 0 AS rank
            FROM recipients r
            WHERE r.carrier = d.carrier AND r.carrier_msg_id = d.msg_id
            UNION ALL
            SELECT r.message_id, r.idx, r.state, r.dlr_stat, 1 FROM recipients r
            WHERE r.carrier = d.carrier AND r.carrier_msg_id_alt = d.msg_id
            UNION ALL
            -- a hex id made only of digits ("12345678") was stored as given and its
            -- alternate read it as decimal; its decimal receipt reads back to it in hex
            SELECT r.message_id, r.idx, r.state, r.dlr_stat, 2 FROM recipients r
            WHERE r.carrier = d.carrier
              AND r.carrier_msg_id = CASE WHEN d.msg_id ~ '^[0-9]{1,18}$'
                                          THEN to_hex(d.msg_id::bigint) END
        ) x
    ), one AS (
        SELECT DISTINCT ON (did) * FROM found WHERE state = 'submitted'
        ORDER BY did, rank
    ), upd AS (
        UPDATE recipients r
        SET state = CASE one.stat WHEN 'DELIVRD' THEN 'delivered'
                                  WHEN 'EXPIRED' THEN 'expired' ELSE 'failed' END,
            reason = CASE WHEN one.stat = 'DELIVRD' THEN NULL
                          ELSE lower(coalesce(one.stat, 'unknown')) END,
            dlr_stat = one.stat, dlr_err = one.err,
            -- the carrier's minute-precision date may read before our submit
            done_at = greatest(coalesce(one.done_at, now()), r.submitted_at),
            carrier_done_at = one.done_at
        FROM one WHERE r.message_id = one.message_id AND r.idx = one.idx
        RETURNING r.tenant_id, r.message_id, r.idx, r.number, r.state, r.reason
    ), hooks AS (
        INSERT INTO event_log (tenant_id, sp_id, type, data)
        SELECT upd.tenant_id, m.sp_id, 'message.recipient.' || upd.state,
               jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                  'number', upd.number, 'state', upd.state,
                                  'reason', upd.reason)
        FROM upd JOIN messages m ON m.id = upd.message_id
    ), gone AS (
        DELETE FROM dlr_inbox d USING one WHERE d.id = one.did
    ), again AS (
        -- a receipt the SMSC sent again (after a reconnect) for a recipient that is already
        -- final: a duplicate, dropped at once
        DELETE FROM dlr_inbox d WHERE d.id IN (
            SELECT did FROM found
            WHERE rank < 2 AND state IN ('delivered', 'failed', 'expired')
              AND dlr_stat IS NOT NULL)
        RETURNING d.id
    )
    SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM again) INTO matched, repeated;
END $$;

-- The event log's trigger runs inside the statements above: it plans with the defaults,
-- whatever its caller set (its webhook join is best hashed).
ALTER FUNCTION event_log_added() SET enable_seqscan = on SET enable_bitmapscan = on
    SET enable_hashjoin = on SET enable_mergejoin = on;

ALTER FUNCTION telgate_claim(integer, integer, integer) SET jit = off;

-- One statement per writer round: the submits answered, the receipts received and the receipts
-- still waiting, stored together (handlers/messages/dispatch.py, `_flush`).
--
-- Before, a recipient took three writes after its claim: `submitted` with its carrier id, its
-- receipt into `dlr_inbox`, then the match that made it final and took the receipt out again,
-- in two transactions and three statements a round. Now:
-- * a receipt that arrives in the same round as its submit's response (an SMSC that reports
--   at once, a fast failure) is folded into that response's outcome: the recipient goes from
--   `claimed` to final in one update (`finals`, `stats`, `errs`, `dones`);
-- * the other receipts are matched straight from the arrays to their submitted recipients;
--   only those no recipient is waiting for (its submit's outcome not stored yet, or never:
--   the in-doubt copy's) go into `dlr_inbox`, and the inbox is matched first in every round.
-- Either way a receipt is stored, as a final recipient or an inbox row, when this statement
-- commits; the dispatcher acknowledges it only then.
CREATE FUNCTION telgate_store_round(
    mids uuid[], idxs integer[], carriers text[], ids text[], alts text[],
    finals boolean[], stats text[], errs text[], dones timestamptz[],
    r_carriers text[], r_ids text[], r_stats text[], r_errs text[], r_dones timestamptz[],
    OUT stored bigint, OUT matched bigint, OUT repeated bigint, OUT waiting bigint)
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    m bigint;
    r bigint;
    w bigint;
BEGIN
    stored := 0; matched := 0; repeated := 0; waiting := 0;
    IF cardinality(mids) > 0 THEN
        WITH upd AS (
            UPDATE recipients r SET
                state = CASE WHEN NOT u.final THEN 'submitted'
                             WHEN u.stat = 'DELIVRD' THEN 'delivered'
                             WHEN u.stat = 'EXPIRED' THEN 'expired' ELSE 'failed' END,
                carrier = u.carrier, carrier_msg_id = u.mid, carrier_msg_id_alt = u.alt,
                submitted_at = now(), claimed_by = NULL, smpp_status = 0,
                reason = CASE WHEN NOT u.final THEN r.reason
                              WHEN u.stat = 'DELIVRD' THEN NULL
                              ELSE lower(coalesce(u.stat, 'unknown')) END,
                dlr_stat = CASE WHEN u.final THEN u.stat ELSE r.dlr_stat END,
                dlr_err = CASE WHEN u.final THEN u.err ELSE r.dlr_err END,
                -- the carrier's minute-precision date may read before our submit
                done_at = CASE WHEN u.final THEN greatest(coalesce(u.done, now()), now())
                               ELSE r.done_at END,
                carrier_done_at = CASE WHEN u.final THEN u.done ELSE r.carrier_done_at END
            FROM unnest(mids, idxs, carriers, ids, alts, finals, stats, errs, dones)
                 AS u(message_id, idx, carrier, mid, alt, final, stat, err, done)
            WHERE r.message_id = u.message_id AND r.idx = u.idx AND r.state = 'claimed'
            RETURNING r.tenant_id, r.message_id, r.idx, r.number, r.state, r.reason
        ), hooks AS (
            INSERT INTO event_log (tenant_id, sp_id, type, data)
            SELECT upd.tenant_id, m.sp_id, 'message.recipient.' || upd.state,
                   jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                      'number', upd.number, 'state', upd.state,
                                      'reason', upd.reason)
            FROM upd JOIN messages m ON m.id = upd.message_id
            WHERE upd.state <> 'submitted'
        )
        SELECT count(*), count(*) FILTER (WHERE upd.state <> 'submitted')
        INTO stored, matched FROM upd;

        IF stored < cardinality(mids) AND true = ANY (finals) THEN
            -- an outcome no longer ours (another instance took the row back as in doubt):
            -- its folded receipt waits in the inbox like any receipt nobody expects
            INSERT INTO dlr_inbox (carrier, msg_id, stat, err, done_at)
            SELECT u.carrier, u.mid, u.stat, u.err, u.done
            FROM unnest(mids, idxs, carriers, ids, finals, stats, errs, dones)
                 AS u(message_id, idx, carrier, mid, final, stat, err, done)
            WHERE u.final AND NOT EXISTS (
                SELECT 1 FROM recipients r
                WHERE r.message_id = u.message_id AND r.idx = u.idx
                  AND r.carrier = u.carrier AND r.carrier_msg_id = u.mid);
            GET DIAGNOSTICS w = ROW_COUNT;
            waiting := waiting + w;
        END IF;

        UPDATE messages m SET dispatch_started_at = now()
        FROM (SELECT DISTINCT unnest(mids) AS id) u
        WHERE m.id = u.id AND m.dispatch_started_at IS NULL;
    END IF;

    -- receipts of earlier rounds whose submits were stored since (migration 0021)
    IF EXISTS (SELECT 1 FROM dlr_inbox) THEN
        SELECT x.matched, x.repeated INTO m, r FROM telgate_match_receipts() x;
        matched := matched + m;
        repeated := repeated + r;
    END IF;

    IF cardinality(r_ids) > 0 THEN
        WITH d AS (
            SELECT * FROM unnest(r_carriers, r_ids, r_stats, r_errs, r_dones)
                          WITH ORDINALITY AS d(carrier, msg_id, stat, err, done_at, did)
        ), found AS (
            -- as in telgate_match_receipts: the id as given, in the other base, and a hex id
            -- made only of digits read back from its decimal receipt
            SELECT d.did, d.stat, d.err, d.done_at, x.message_id, x.idx,
                   x.state, x.dlr_stat, x.rank
            FROM d CROSS JOIN LATERAL (
                SELECT r.message_id, r.idx, r.state, r.dlr_stat, 0 AS rank
                FROM recipients r
                WHERE r.carrier = d.carrier AND r.carrier_msg_id = d.msg_id
                UNION ALL
                SELECT r.message_id, r.idx, r.state, r.dlr_stat, 1 FROM recipients r
                WHERE r.carrier = d.carrier AND r.carrier_msg_id_alt = d.msg_id
                UNION ALL
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
        ), again AS (
            -- sent again (after a reconnect) for a recipient already final: dropped
            SELECT DISTINCT did FROM found
            WHERE rank < 2 AND state IN ('delivered', 'failed', 'expired')
              AND dlr_stat IS NOT NULL AND did NOT IN (SELECT did FROM one)
        ), rest AS (
            INSERT INTO dlr_inbox (carrier, msg_id, stat, err, done_at)
            SELECT d.carrier, d.msg_id, d.stat, d.err, d.done_at FROM d
            WHERE d.did NOT IN (SELECT did FROM one) AND d.did NOT IN (SELECT did FROM again)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM upd), (SELECT count(*) FROM again),
               (SELECT count(*) FROM rest)
        INTO m, r, w;
        matched := matched + m;
        repeated := repeated + r;
        waiting := waiting + w;
    END IF;
END $$;

-- Replaced by the above.
DROP FUNCTION telgate_store_submitted(uuid[], integer[], text[], text[], text[]);

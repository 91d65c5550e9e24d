-- A receipt's done date is the carrier's clock, to the minute: kept as it came, while done_at
-- (when the recipient reached its final state for us) never precedes submitted_at.
ALTER TABLE recipients ADD COLUMN carrier_done_at timestamptz;
UPDATE recipients SET carrier_done_at = done_at,
                      done_at = greatest(done_at, submitted_at)
 WHERE dlr_stat IS NOT NULL AND done_at < submitted_at;

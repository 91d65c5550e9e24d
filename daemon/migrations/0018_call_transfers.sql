-- The transfer chain of a call (issue 13 item 4): the extensions it went through, in order,
-- the last one being `extension` (empty for a call never transferred). A constant default
-- makes this a catalogue change, not a rewrite of the call records.
ALTER TABLE call_records ADD COLUMN transfers text[] NOT NULL DEFAULT '{}';

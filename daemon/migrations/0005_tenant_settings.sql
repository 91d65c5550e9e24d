-- Tenant settings a portal sets itself (GET/PATCH /v1/tenant/settings) use the existing
-- tenants.settings jsonb for every setting no SQL elsewhere reads (handlers.tenants.TenantSettings
-- validates them, so a new setting needs no migration); sms_max_bytes, optout_number and
-- optout_line keep their columns.

-- SP IDs get a display name (seed 000 lists SP ID, company name, registration date).
ALTER TABLE sp_ids ADD COLUMN name text NOT NULL DEFAULT '' CHECK (length(name) <= 100);

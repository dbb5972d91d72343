-- tenant-memory 0001: the signed tenant context every row-level security
-- policy is keyed on.
--
-- The application binds, transaction-locally, the setting `tenant_sdk.ctx`:
--
--     v1:<key id>:<tenant uuid>:<expiry, unix ms>:<hex hmac-sha256>
--
-- where the MAC is HMAC-SHA256(subkey, 'tenant_sdk/pg-ctx/v1|<key id>|<tenant>|<expiry>')
-- under the PostgreSQL subkey of tenant-core (`issuer.subkey(Purpose::Postgres)`).
-- `tenant_sdk.current_tenant()` verifies it against the keys in
-- `tenant_sdk.context_keys`, which only the owner (this migration's role) can
-- read: the application role can *set* the setting to anything, but it cannot
-- mint a value that verifies for another tenant.

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;

DO $check$
BEGIN
    IF (SELECT e.extnamespace::regnamespace::text FROM pg_extension e WHERE e.extname = 'pgcrypto') <> 'public' THEN
        RAISE EXCEPTION 'tenant-memory needs the pgcrypto extension in schema public';
    END IF;
END
$check$;

CREATE SCHEMA tenant_sdk;
REVOKE ALL ON SCHEMA tenant_sdk FROM PUBLIC;

-- Verification keys, one row per master-key id so keys can rotate.
-- No privilege on this table is ever granted to the application role.
CREATE TABLE tenant_sdk.context_keys (
    key_id       text        PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    secret       bytea       NOT NULL CHECK (length(secret) = 32),
    installed_at timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);
REVOKE ALL ON tenant_sdk.context_keys FROM PUBLIC;

-- The tenant of the context bound to the current transaction.
--
-- * setting missing or empty (it reads back as '' after the transaction that
--   set it ends)       -> NULL: policies then match no row, and WITH CHECK fails;
-- * malformed          -> error TSM01;
-- * unknown/retired key-> error TSK01;
-- * MAC does not verify-> error TSB01;
-- * expired            -> error TSE01.
--
-- Never a default tenant. SECURITY DEFINER so it can read the keys; the
-- search_path is pinned so callers cannot shadow anything it uses. Policies
-- call it as `(SELECT tenant_sdk.current_tenant())`, an InitPlan evaluated
-- once per statement, not once per row.
CREATE FUNCTION tenant_sdk.current_tenant() RETURNS uuid
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bound  text := current_setting('tenant_sdk.ctx', true);
    parts  text[];
    secret bytea;
BEGIN
    IF bound IS NULL OR bound = '' THEN
        RETURN NULL;
    END IF;

    -- Cheap shape checks only (regular expressions here cost ~30 us per
    -- statement): the tenant and expiry are cast only after the MAC over
    -- their exact text has verified, so a verified value is well formed.
    parts := string_to_array(bound, ':');
    IF cardinality(parts) <> 5
       OR parts[1] <> 'v1'
       OR length(parts[2]) NOT BETWEEN 1 AND 64
       OR length(parts[3]) <> 36
       OR length(parts[4]) NOT BETWEEN 1 AND 15
       OR length(parts[5]) <> 64 THEN
        RAISE EXCEPTION USING ERRCODE = 'TSM01',
            MESSAGE = 'tenant_sdk: the bound tenant context is malformed';
    END IF;

    SELECT k.secret INTO secret
      FROM tenant_sdk.context_keys k
     WHERE k.key_id = parts[2] AND k.retired_at IS NULL;
    IF secret IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TSK01',
            MESSAGE = 'tenant_sdk: the bound tenant context names an unknown or retired key';
    END IF;

    IF encode(public.hmac(convert_to('tenant_sdk/pg-ctx/v1|' || parts[2] || '|' || parts[3] || '|' || parts[4], 'UTF8'),
                          secret, 'sha256'), 'hex') <> parts[5] THEN
        RAISE EXCEPTION USING ERRCODE = 'TSB01',
            MESSAGE = 'tenant_sdk: the bound tenant context has a bad signature';
    END IF;

    IF parts[4]::bigint <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint THEN
        RAISE EXCEPTION USING ERRCODE = 'TSE01',
            MESSAGE = 'tenant_sdk: the bound tenant context has expired';
    END IF;

    RETURN parts[3]::uuid;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.current_tenant() FROM PUBLIC;

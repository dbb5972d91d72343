-- tenant-memory 0001: the signed context every row-level security policy is
-- keyed on. Runs with search_path pinned to pg_catalog (MemoryAdmin::migrate),
-- so every name in the views below is bound to a built-in at creation, and
-- the function pins its own path.
--
-- The application binds, transaction-locally and only as a bind parameter,
-- the setting `tenant_sdk.ctx`:
--
--     <mac: 64 hex> v2 <tenant uuid> <expiry: unix ms, 15 digits> <key id> <grant>...
--
-- mac = HMAC-SHA256(postgres subkey, 'tenant_sdk/pg-ctx/v2|' || everything after the mac and its space).
-- Each grant is a scope key a row may carry (see 0002): the tenant, a memory
-- namespace (empty: every namespace) and an audience (empty: shared rows;
-- a principal: that principal's private rows), separated by U+001F; or the
-- bare tenant, which the owner-side erasure and export use to reach every
-- row of the tenant. Namespaces and principals never contain whitespace or
-- control characters, so the encoding is unambiguous.

CREATE SCHEMA tenant_sdk;
REVOKE ALL ON SCHEMA tenant_sdk FROM PUBLIC;

-- Verification keys, one row per master-key id so keys can rotate. The key
-- is stored as its two HMAC pads (inner pad followed by the domain prefix,
-- outer pad), so the verifier needs only the built-in sha256(). No privilege
-- on this table is ever granted to the application role.
CREATE TABLE tenant_sdk.context_keys (
    key_id       text        PRIMARY KEY CHECK (key_id ~ '^[A-Za-z0-9._-]{1,64}$'),
    inner_prefix bytea       NOT NULL CHECK (octet_length(inner_prefix) > 64),
    outer_pad    bytea       NOT NULL CHECK (octet_length(outer_pad) = 64),
    installed_at timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz
);
REVOKE ALL ON tenant_sdk.context_keys FROM PUBLIC;

-- The bound value once it has verified, with the precise error when it
-- does not (the views below call it only on failure paths):
--   missing or ''          -> NULL (policies match no row; WITH CHECK fails)
--   malformed              -> TSM01
--   unknown or retired key -> TSK01
--   MAC does not verify    -> TSB01
--   expired                -> TSE01
-- The tenant and expiry are cast only after the MAC over their exact text
-- has verified. Not callable by the application role: it calls
-- current_tenant() and current_grants().
CREATE FUNCTION tenant_sdk.verified_bound() RETURNS text
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bound        text := current_setting('tenant_sdk.ctx', true);
    inner_prefix bytea;
    outer_pad    bytea;
BEGIN
    IF bound IS NULL OR bound = '' THEN
        RETURN NULL;
    END IF;
    IF length(bound) < 122
       OR substr(bound, 65, 4) <> ' v2 '
       OR substr(bound, 1, 64) !~ '^[0-9a-f]{64}$'
       OR substr(bound, 69, 53) !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} [0-9]{15} $' THEN
        RAISE EXCEPTION USING ERRCODE = 'TSM01',
            MESSAGE = 'tenant_sdk: the bound tenant context is malformed';
    END IF;
    SELECT k.inner_prefix, k.outer_pad INTO inner_prefix, outer_pad
      FROM tenant_sdk.context_keys k
     WHERE k.key_id = split_part(substr(bound, 122), ' ', 1) AND k.retired_at IS NULL;
    IF outer_pad IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'TSK01',
            MESSAGE = 'tenant_sdk: the bound tenant context names an unknown or retired key';
    END IF;
    IF encode(sha256(outer_pad || sha256(inner_prefix || convert_to(substr(bound, 66), 'UTF8'))), 'hex')
       <> substr(bound, 1, 64) THEN
        RAISE EXCEPTION USING ERRCODE = 'TSB01',
            MESSAGE = 'tenant_sdk: the bound tenant context has a bad signature';
    END IF;
    IF statement_timestamp() >= 'epoch'::timestamptz + substr(bound, 106, 15)::int8 * '1 millisecond'::interval THEN
        RAISE EXCEPTION USING ERRCODE = 'TSE01',
            MESSAGE = 'tenant_sdk: the bound tenant context has expired';
    END IF;
    RETURN bound;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.verified_bound() FROM PUBLIC;

-- The tenant and the grants of the verified bound context (same errors).
-- Policies on Citus call these two instead of reading the views: Citus
-- distributes no policy that contains a subquery (MemoryAdmin::distribute
-- switches the policies).
CREATE FUNCTION tenant_sdk.current_tenant() RETURNS uuid
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT substr(tenant_sdk.verified_bound(), 69, 36)::uuid $fn$;
REVOKE ALL ON FUNCTION tenant_sdk.current_tenant() FROM PUBLIC;

CREATE FUNCTION tenant_sdk.current_grants() RETURNS text[]
    LANGUAGE sql
    STABLE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT string_to_array(substr(tenant_sdk.verified_bound(), 122), ' ') $fn$;
REVOKE ALL ON FUNCTION tenant_sdk.current_grants() FROM PUBLIC;

-- The verified context, evaluated inside each statement's own plan (the
-- policies read it as an InitPlan: once per statement, no function call on
-- the happy path). Owner's rights (no security_invoker) so it can read the
-- keys for the application role. It exposes two columns, the verified
-- tenant and grants, and filters no rows, so reading it never exposes a key
-- (no security barrier needed, and without one the planner flattens it into
-- the InitPlan). The MAC covers everything after it, version included, so a
-- value whose MAC verifies has the shape the casts expect; the conditions
-- are AND-ed in order so the expiry is cast only after a key was found and
-- the MAC verified (a NULL MAC would not stop the AND). Any failure goes
-- through current_tenant(), which raises; should it ever return instead,
-- the columns are NULL (no row, no grant), never a default.
CREATE VIEW tenant_sdk.verified_context AS
SELECT CASE WHEN v.ok THEN substr(v.bound, 69, 36)::uuid
            WHEN v.bound IS NULL OR v.bound = '' THEN NULL::uuid
            ELSE CASE WHEN tenant_sdk.current_tenant() IS NULL THEN NULL::uuid END
       END AS tenant,
       CASE WHEN v.ok THEN string_to_array(substr(v.bound, 122), ' ')
            WHEN v.bound IS NULL OR v.bound = '' THEN NULL::text[]
            ELSE CASE WHEN tenant_sdk.current_tenant() IS NULL THEN NULL::text[] END
       END AS grants
  FROM (SELECT s.bound,
               k.outer_pad IS NOT NULL
               AND encode(sha256(k.outer_pad || sha256(k.inner_prefix || convert_to(substr(s.bound, 66), 'UTF8'))), 'hex')
                   = substr(s.bound, 1, 64)
               AND statement_timestamp() < 'epoch'::timestamptz + substr(s.bound, 106, 15)::int8 * '1 millisecond'::interval
               AS ok
          FROM (SELECT current_setting('tenant_sdk.ctx', true) AS bound) AS s
          LEFT JOIN tenant_sdk.context_keys AS k
                 ON k.key_id = split_part(substr(s.bound, 122), ' ', 1) AND k.retired_at IS NULL) AS v;
REVOKE ALL ON tenant_sdk.verified_context FROM PUBLIC;

-- The tenant the bound value names, NOT verified: the memory tables' policies
-- use it only to narrow their scans to one tenant's index range; what admits
-- a row is the verified grant check next to it. Malformed values go to
-- current_tenant(), which raises.
CREATE VIEW tenant_sdk.bound_tenant AS
SELECT CASE WHEN substr(s.bound, 65, 4) = ' v2 ' AND substr(s.bound, 105, 1) = ' '
            THEN substr(s.bound, 69, 36)::uuid
            WHEN s.bound IS NULL OR s.bound = '' THEN NULL::uuid
            ELSE CASE WHEN tenant_sdk.current_tenant() IS NULL THEN NULL::uuid END
       END AS tenant
  FROM (SELECT current_setting('tenant_sdk.ctx', true) AS bound) AS s;
REVOKE ALL ON tenant_sdk.bound_tenant FROM PUBLIC;

-- Array overlap, as pg_catalog's `&&`, but estimated like `<>`: a policy's
-- scope check admits nearly every row of the tenant the scan already
-- narrowed to, and the built-in operator's default estimate (0.5% of rows)
-- would steer the planner away from ordered index scans with LIMIT.
CREATE OPERATOR tenant_sdk.&& (
    FUNCTION = pg_catalog.arrayoverlap,
    LEFTARG = anyarray,
    RIGHTARG = anyarray,
    RESTRICT = pg_catalog.neqsel
);

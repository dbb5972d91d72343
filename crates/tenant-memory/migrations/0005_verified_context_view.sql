-- tenant-memory 0005: the policies verify the signed context inside the
-- statement's own plan, through a view, instead of calling a PL/pgSQL
-- function.
--
-- Same scheme and contract as 0001/0004 (same bound value, key table, MAC,
-- error codes); only where the verification runs changes. Profiling showed
-- the per-statement cost of `current_tenant()` was the function call
-- machinery, not the MAC: SECURITY DEFINER set-up (user switch, GUC nest
-- level for the pinned search_path), PL/pgSQL expression initialisation
-- per transaction, and an SPI query with its own executor start-up. A view
-- runs with its owner's rights on the tables it reads (no `security_invoker`),
-- so it can read `tenant_sdk.context_keys` for the application role, and it
-- is expanded into the statement's plan as an InitPlan evaluated once per
-- statement: no function call on the happy path. Measured with the
-- scoped-read benchmark: 0.59-0.69x -> 0.73-0.88x of raw sqlx (noisy
-- machine; see docs/benchmarks.md).
--
-- * setting missing or empty -> NULL (no row matches; WITH CHECK fails);
-- * MAC verifies and not expired -> the tenant;
-- * anything else -> `tenant_sdk.current_tenant()` is called, which raises
--   the precise error (TSM01 malformed, TSK01 unknown/retired key, TSB01 bad
--   MAC, TSE01 expired). It is only ever reached on a failure path (CASE
--   evaluates lazily, and nothing in it is constant, so the planner cannot
--   evaluate it early).
--
-- Casts of the tenant and expiry text happen only in the branch where the
-- MAC over their exact text has verified. The view is a security barrier and
-- exposes one column, the verified tenant: the application role may select
-- from it (it learns its own bound tenant, as `current_tenant()` tells it)
-- but never sees a key. Its definition, readable in pg_views, holds no secret.

CREATE VIEW tenant_sdk.verified_context WITH (security_barrier) AS
SELECT CASE
         WHEN s.bound IS NULL OR s.bound = '' THEN NULL::uuid
         WHEN starts_with(s.bound, 'v1:')
          AND split_part(s.bound, ':', 6) = ''
          AND encode(public.hmac(convert_to(concat_ws('|', 'tenant_sdk/pg-ctx/v1', k.key_id,
                                                      split_part(s.bound, ':', 3),
                                                      split_part(s.bound, ':', 4)), 'UTF8'),
                                 k.secret, 'sha256'), 'hex') = split_part(s.bound, ':', 5)
         THEN CASE
                WHEN split_part(s.bound, ':', 4)::bigint > (extract(epoch FROM clock_timestamp()) * 1000)::bigint
                THEN split_part(s.bound, ':', 3)::uuid
                ELSE tenant_sdk.current_tenant()
              END
         ELSE tenant_sdk.current_tenant()
       END AS tenant
  FROM (SELECT current_setting('tenant_sdk.ctx', true) AS bound) AS s
  LEFT JOIN tenant_sdk.context_keys AS k
         ON k.key_id = split_part(s.bound, ':', 2) AND k.retired_at IS NULL;
REVOKE ALL ON tenant_sdk.verified_context FROM PUBLIC;

ALTER POLICY tenant_isolation ON tenant_memory.threads
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context))
    WITH CHECK (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context));
ALTER POLICY tenant_isolation ON tenant_memory.messages
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context))
    WITH CHECK (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context));
ALTER POLICY tenant_isolation ON tenant_memory.kv
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context))
    WITH CHECK (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context));
ALTER POLICY tenant_isolation ON tenant_memory.checkpoints
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context))
    WITH CHECK (tenant_id = (SELECT tenant FROM tenant_sdk.verified_context));

-- The application role also needs to read the view.
CREATE OR REPLACE FUNCTION tenant_sdk.grant_app_role(app_role name) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA tenant_sdk, tenant_memory TO %I', app_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION tenant_sdk.current_tenant() TO %I', app_role);
    EXECUTE format('GRANT SELECT ON tenant_sdk.verified_context TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_memory.threads TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT ON tenant_memory.messages TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_memory.kv TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON tenant_memory.checkpoints TO %I', app_role);
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.grant_app_role(name) FROM PUBLIC;

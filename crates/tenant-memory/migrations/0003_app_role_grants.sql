-- tenant-memory 0003: what the application role may do, and nothing more.
--
-- The owner role usually cannot create roles, and the application role's
-- name belongs to the deployment, so the grants live in a function that
-- `MemoryAdmin::migrate(app_role)` calls after the migrations. Only the
-- owner can execute it. Later migrations replace it with `CREATE OR REPLACE`.
--
-- Not granted, on purpose: anything on tenant_sdk.context_keys; UPDATE or
-- DELETE on messages (append-only); CREATE on any schema; TRUNCATE anywhere.

CREATE FUNCTION tenant_sdk.grant_app_role(app_role name) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA tenant_sdk, tenant_memory TO %I', app_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION tenant_sdk.current_tenant() TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_memory.threads TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT ON tenant_memory.messages TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_memory.kv TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON tenant_memory.checkpoints TO %I', app_role);
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.grant_app_role(name) FROM PUBLIC;

-- tenant-memory 0003: what the application role may do, and nothing more.
--
-- The owner role usually cannot create roles, and the application role's
-- name belongs to the deployment, so the grants live in a function that
-- `MemoryAdmin::migrate(app_role)` calls after the migrations. Only the
-- owner can execute it.
--
-- Not granted, on purpose: anything on tenant_sdk.context_keys; UPDATE or
-- DELETE on messages (append-only); DELETE on threads (only through
-- delete_thread); updates of tenant, namespace or audience columns; CREATE
-- on any schema; TRUNCATE anywhere. TEMPORARY on the database is revoked
-- (from PUBLIC too when the owner may), so no session can leave temporary
-- tables behind; doctor reports it when it remains.

CREATE FUNCTION tenant_sdk.grant_app_role(app_role name) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA tenant_sdk, tenant_memory TO %I', app_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION tenant_sdk.current_tenant(), tenant_sdk.current_grants() TO %I', app_role);
    EXECUTE format('GRANT SELECT ON tenant_sdk.verified_context, tenant_sdk.bound_tenant TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT ON tenant_memory.threads TO %I', app_role);
    EXECUTE format('GRANT UPDATE (metadata, last_seq, last_checkpoint, updated_at) ON tenant_memory.threads TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT ON tenant_memory.messages TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON tenant_memory.kv TO %I', app_role);
    EXECUTE format('GRANT UPDATE (value, version, updated_at) ON tenant_memory.kv TO %I', app_role);
    EXECUTE format('GRANT SELECT, INSERT ON tenant_memory.checkpoints TO %I', app_role);
    EXECUTE format('GRANT UPDATE (parent_id, state, metadata) ON tenant_memory.checkpoints TO %I', app_role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION tenant_memory.delete_thread(uuid) TO %I', app_role);
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM %I', current_database(), app_role);
    IF has_database_privilege(app_role, current_database(), 'TEMPORARY')
       AND pg_has_role((SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'USAGE') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.grant_app_role(name) FROM PUBLIC;

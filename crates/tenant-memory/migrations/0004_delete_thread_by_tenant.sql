-- tenant-memory 0004: thread deletion names the tenant.
--
-- Every statement of delete_thread filters by tenant_id as well as by id,
-- so on a cluster each one is a router query on the tenant's shard group
-- (Citus refuses a row lock across shards, and a delete by id alone would
-- visit every shard). Row-level security still admits only the bound
-- context's rows: naming another tenant finds nothing.

DROP FUNCTION tenant_memory.delete_thread(uuid);

CREATE FUNCTION tenant_memory.delete_thread(tenant uuid, thread uuid) RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    bound text := COALESCE(pg_catalog.current_setting('tenant_sdk.ctx', true), '');
BEGIN
    -- On a cluster the owner's statements reach the worker on a connection
    -- of their own, which the caller's binding has not reached: bind the
    -- caller's (still verified) value there first, in one router statement
    -- on the tenant's shard group. On a single node this binds it again.
    PERFORM 1
        FROM (SELECT pg_catalog.set_config('tenant_sdk.ctx', bound, true) AS b OFFSET 0) AS s
        CROSS JOIN LATERAL (SELECT t.id FROM tenant_memory.threads t
                            WHERE t.tenant_id = tenant AND t.id = thread
                              AND s.b IS NOT NULL OFFSET 0) AS x;
    PERFORM 1 FROM tenant_memory.threads t
        WHERE t.tenant_id = tenant AND t.id = thread FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM tenant_memory.messages m WHERE m.tenant_id = tenant AND m.thread_id = thread;
    DELETE FROM tenant_memory.checkpoints c WHERE c.tenant_id = tenant AND c.thread_id = thread;
    DELETE FROM tenant_memory.threads t WHERE t.tenant_id = tenant AND t.id = thread;
    RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_memory.delete_thread(uuid, uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenant_sdk.grant_app_role(app_role name) RETURNS void
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
    EXECUTE format('GRANT EXECUTE ON FUNCTION tenant_memory.delete_thread(uuid, uuid) TO %I', app_role);
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM %I', current_database(), app_role);
    IF has_database_privilege(app_role, current_database(), 'TEMPORARY')
       AND pg_has_role((SELECT d.datdba FROM pg_database d WHERE d.datname = current_database()), 'USAGE') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_sdk.grant_app_role(name) FROM PUBLIC;

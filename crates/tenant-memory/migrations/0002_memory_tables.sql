-- tenant-memory 0002: threads, messages, key-value state and checkpoints.
--
-- Every table: tenant_id leads every key and index (ids are tenant-scoped,
-- so a unique or foreign-key check reveals nothing about other tenants);
-- ENABLE + FORCE row level security; one policy with USING and WITH CHECK.
--
-- Each row carries its scope keys (a stored generated column): the tenant,
-- the memory namespace and the audience ('' for rows shared tenant-wide, the
-- owning principal for private threads and their messages and checkpoints),
-- in the three forms a grant of the signed context can take (see 0001). A
-- row is visible and writable only when its keys overlap the verified
-- grants, so namespaces and private threads are enforced here, not only in
-- the SDK. The unverified bound tenant narrows scans to one tenant's index
-- range.
--
-- Messages and checkpoints copy their thread's namespace and audience under
-- a foreign key, so they can be no more visible than their thread. No
-- foreign key cascades (cascades run with the owner's rights and would
-- bypass these policies): deleting a thread deletes what the caller can see,
-- and fails while rows it cannot see still reference the thread.
-- Ordering values are per thread; nothing here draws from a sequence shared
-- by tenants.

CREATE SCHEMA tenant_memory;
REVOKE ALL ON SCHEMA tenant_memory FROM PUBLIC;

CREATE TABLE tenant_memory.threads (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    namespace       text        NOT NULL COLLATE "C" CHECK (namespace ~ '^[^[:cntrl:]]+$'),
    audience        text        NOT NULL COLLATE "C" DEFAULT '',
    owner_principal text        NOT NULL COLLATE "C",
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_seq        bigint      NOT NULL DEFAULT 0,
    last_checkpoint bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    scope_keys      text[]      GENERATED ALWAYS AS (ARRAY[
                        tenant_id::text || E'\x1f' || namespace || E'\x1f' || audience,
                        tenant_id::text || E'\x1f\x1f' || audience,
                        tenant_id::text]) STORED,
    CHECK (audience = '' OR audience = owner_principal),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, id, namespace, audience)
);
CREATE INDEX threads_recent ON tenant_memory.threads (tenant_id, updated_at DESC, id);

-- Append-only: the application role gets SELECT and INSERT, nothing else.
CREATE TABLE tenant_memory.messages (
    tenant_id  uuid        NOT NULL,
    thread_id  uuid        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    namespace  text        NOT NULL COLLATE "C",
    audience   text        NOT NULL COLLATE "C",
    role       text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    scope_keys text[]      GENERATED ALWAYS AS (ARRAY[
                   tenant_id::text || E'\x1f' || namespace || E'\x1f' || audience,
                   tenant_id::text || E'\x1f\x1f' || audience,
                   tenant_id::text]) STORED,
    PRIMARY KEY (tenant_id, thread_id, seq),
    FOREIGN KEY (tenant_id, thread_id, namespace, audience)
        REFERENCES tenant_memory.threads (tenant_id, id, namespace, audience)
);

CREATE TABLE tenant_memory.kv (
    tenant_id  uuid        NOT NULL,
    namespace  text        NOT NULL COLLATE "C" CHECK (namespace ~ '^[^[:cntrl:]]+$'),
    key        text        NOT NULL COLLATE "C",
    value      jsonb       NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    scope_keys text[]      GENERATED ALWAYS AS (ARRAY[
                   tenant_id::text || E'\x1f' || namespace || E'\x1f',
                   tenant_id::text || E'\x1f\x1f',
                   tenant_id::text]) STORED,
    PRIMARY KEY (tenant_id, namespace, key)
);

CREATE TABLE tenant_memory.checkpoints (
    tenant_id        uuid        NOT NULL,
    thread_id        uuid        NOT NULL,
    namespace        text        NOT NULL COLLATE "C" CHECK (namespace ~ '^[^[:cntrl:]]+$'),
    checkpoint_id    text        NOT NULL COLLATE "C",
    parent_id        text        COLLATE "C",
    state            jsonb       NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    seq              bigint      NOT NULL CHECK (seq > 0),
    thread_namespace text        NOT NULL COLLATE "C",
    audience         text        NOT NULL COLLATE "C",
    scope_keys       text[]      GENERATED ALWAYS AS (ARRAY[
                         tenant_id::text || E'\x1f' || namespace || E'\x1f' || audience,
                         tenant_id::text || E'\x1f\x1f' || audience,
                         tenant_id::text]) STORED,
    PRIMARY KEY (tenant_id, thread_id, namespace, checkpoint_id),
    FOREIGN KEY (tenant_id, thread_id, thread_namespace, audience)
        REFERENCES tenant_memory.threads (tenant_id, id, namespace, audience)
);
CREATE INDEX checkpoints_latest ON tenant_memory.checkpoints (tenant_id, thread_id, namespace, seq DESC);

ALTER TABLE tenant_memory.threads     ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.threads     FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.messages    ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.messages    FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.kv          ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.kv          FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.checkpoints FORCE  ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenant_memory.threads FOR ALL
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.bound_tenant)
                AND scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context))
    WITH CHECK (scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context));
CREATE POLICY tenant_isolation ON tenant_memory.messages FOR ALL
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.bound_tenant)
                AND scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context))
    WITH CHECK (scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context));
CREATE POLICY tenant_isolation ON tenant_memory.kv FOR ALL
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.bound_tenant)
                AND scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context))
    WITH CHECK (scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context));
CREATE POLICY tenant_isolation ON tenant_memory.checkpoints FOR ALL
    USING      (tenant_id = (SELECT tenant FROM tenant_sdk.bound_tenant)
                AND scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context))
    WITH CHECK (scope_keys OPERATOR(tenant_sdk.&&) (SELECT grants FROM tenant_sdk.verified_context));

-- Deletes a thread with the messages and checkpoints the bound context can
-- see (the policies apply: the tables are FORCEd). Owner's rights only so
-- that messages stay append-only for the application role. Returns false
-- when the context sees no such thread; fails with a foreign-key violation
-- when checkpoints it cannot see still reference the thread.
CREATE FUNCTION tenant_memory.delete_thread(thread uuid) RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM 1 FROM tenant_memory.threads t WHERE t.id = thread FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    DELETE FROM tenant_memory.messages m WHERE m.thread_id = thread;
    DELETE FROM tenant_memory.checkpoints c WHERE c.thread_id = thread;
    DELETE FROM tenant_memory.threads t WHERE t.id = thread;
    RETURN true;
END
$fn$;
REVOKE ALL ON FUNCTION tenant_memory.delete_thread(uuid) FROM PUBLIC;

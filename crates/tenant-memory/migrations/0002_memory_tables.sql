-- tenant-memory 0002: threads, messages, key-value state and checkpoints.
--
-- Every table: tenant_id leads every key and index; ENABLE + FORCE row level
-- security (FORCE so the owner is bound by the policies too); one policy with
-- both USING and WITH CHECK keyed on the verified context, never on a raw
-- setting and never coalesced to a default.

CREATE SCHEMA tenant_memory;
REVOKE ALL ON SCHEMA tenant_memory FROM PUBLIC;

CREATE TABLE tenant_memory.threads (
    tenant_id       uuid        NOT NULL,
    id              uuid        NOT NULL,
    owner_principal text        NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_seq        bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX threads_recent ON tenant_memory.threads (tenant_id, updated_at DESC, id);

-- Append-only: the application role gets SELECT and INSERT, nothing else.
CREATE TABLE tenant_memory.messages (
    tenant_id  uuid        NOT NULL,
    thread_id  uuid        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    role       text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_id, seq),
    FOREIGN KEY (tenant_id, thread_id)
        REFERENCES tenant_memory.threads (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE tenant_memory.kv (
    tenant_id  uuid        NOT NULL,
    namespace  text        NOT NULL COLLATE "C",
    key        text        NOT NULL COLLATE "C",
    value      jsonb       NOT NULL,
    version    bigint      NOT NULL CHECK (version > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace, key)
);

CREATE TABLE tenant_memory.checkpoints (
    tenant_id     uuid        NOT NULL,
    thread_id     uuid        NOT NULL,
    namespace     text        NOT NULL COLLATE "C",
    checkpoint_id text        NOT NULL COLLATE "C",
    parent_id     text        COLLATE "C",
    state         jsonb       NOT NULL,
    metadata      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    ord           bigint      GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (tenant_id, thread_id, namespace, checkpoint_id),
    FOREIGN KEY (tenant_id, thread_id)
        REFERENCES tenant_memory.threads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX checkpoints_latest ON tenant_memory.checkpoints (tenant_id, thread_id, namespace, ord DESC);

ALTER TABLE tenant_memory.threads     ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.threads     FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.messages    ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.messages    FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.kv          ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.kv          FORCE  ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_memory.checkpoints FORCE  ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenant_memory.threads FOR ALL
    USING      (tenant_id = (SELECT tenant_sdk.current_tenant()))
    WITH CHECK (tenant_id = (SELECT tenant_sdk.current_tenant()));
CREATE POLICY tenant_isolation ON tenant_memory.messages FOR ALL
    USING      (tenant_id = (SELECT tenant_sdk.current_tenant()))
    WITH CHECK (tenant_id = (SELECT tenant_sdk.current_tenant()));
CREATE POLICY tenant_isolation ON tenant_memory.kv FOR ALL
    USING      (tenant_id = (SELECT tenant_sdk.current_tenant()))
    WITH CHECK (tenant_id = (SELECT tenant_sdk.current_tenant()));
CREATE POLICY tenant_isolation ON tenant_memory.checkpoints FOR ALL
    USING      (tenant_id = (SELECT tenant_sdk.current_tenant()))
    WITH CHECK (tenant_id = (SELECT tenant_sdk.current_tenant()));

//! Messages: the append-only, ordered history of a thread.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::store::MemoryStore;
use crate::threads::{page_limit, ThreadId};

/// Who produced a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageRole {
    /// System instructions.
    System,
    /// The human or calling service.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

impl MessageRole {
    /// The stored name (`system`, `user`, `assistant`, `tool`).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageRole::System => "system",
            MessageRole::User => "user",
            MessageRole::Assistant => "assistant",
            MessageRole::Tool => "tool",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "system" => Ok(MessageRole::System),
            "user" => Ok(MessageRole::User),
            "assistant" => Ok(MessageRole::Assistant),
            "tool" => Ok(MessageRole::Tool),
            _ => Err(Error::InvalidName {
                kind: "message role",
                reason: "not one of system, user, assistant, tool",
            }),
        }
    }
}

/// A message to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Who produced it.
    pub role: MessageRole,
    /// Its content (any JSON: text, parts, tool calls).
    pub content: Value,
}

impl NewMessage {
    /// A message with `role` and `content`.
    pub fn new(role: MessageRole, content: Value) -> Self {
        Self { role, content }
    }
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// The thread it belongs to.
    pub thread: ThreadId,
    /// Its position in the thread, from 1, without gaps.
    pub seq: i64,
    /// Who produced it.
    pub role: MessageRole,
    /// Its content.
    pub content: Value,
    /// When it was appended, Unix milliseconds.
    pub created_at_ms: i64,
}

impl Message {
    fn from_row(thread: ThreadId, row: &PgRow) -> Result<Self> {
        Ok(Self {
            thread,
            seq: row.try_get("seq")?,
            role: MessageRole::parse(row.try_get("role")?)?,
            content: row.try_get("content")?,
            created_at_ms: row.try_get("created_ms")?,
        })
    }

    /// The cursor that continues a page after this message.
    pub fn cursor(&self) -> MessageCursor {
        MessageCursor(self.seq)
    }
}

/// Where a page of messages continues. Opaque; meaningful only for the
/// thread it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageCursor(i64);

/// One page of a thread's messages, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MessagePage {
    /// The messages.
    pub messages: Vec<Message>,
    /// Pass to [`MemoryStore::messages`] for the next page; `None` at the end.
    pub next: Option<MessageCursor>,
}

const BUMP_SQL: &str = "UPDATE tenant_memory.threads \
     SET last_seq = last_seq + $3, updated_at = now() \
     WHERE tenant_id = $1 AND id = $2 RETURNING last_seq, namespace, audience";

const INSERT_SQL: &str =
    "INSERT INTO tenant_memory.messages (tenant_id, thread_id, seq, namespace, audience, role, content) \
     SELECT $1, $2, $3 + m.ord, $6, $7, m.role, m.content \
     FROM unnest($4::text[], $5::jsonb[]) WITH ORDINALITY AS m(role, content, ord) \
     RETURNING seq, role, content, (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms";

const PAGE_SQL: &str =
    "SELECT m.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT seq, role, content, (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM tenant_memory.messages \
        WHERE tenant_id = $2 AND thread_id = $3 AND seq > $4 AND b.bound IS NOT NULL \
        ORDER BY seq \
        LIMIT $5) AS m";

/// The query the scoped-read benchmark measures.
pub(crate) const LAST_SQL: &str =
    "SELECT m.* FROM (SELECT set_config('tenant_sdk.ctx', $1, true) AS bound OFFSET 0) AS b \
     CROSS JOIN LATERAL ( \
        SELECT seq, role, content, (extract(epoch FROM created_at - '1970-01-01 00:00:00+00'::timestamptz) * 1000)::int8 AS created_ms \
        FROM tenant_memory.messages \
        WHERE tenant_id = $2 AND thread_id = $3 AND b.bound IS NOT NULL \
        ORDER BY seq DESC \
        LIMIT $4) AS m \
     ORDER BY m.seq";

impl MemoryStore {
    /// Appends one message to a thread.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadNotFound`] if the handle's tenant has no such thread.
    pub async fn append_message(&self, thread: ThreadId, message: NewMessage) -> Result<Message> {
        let span = memory_span!("memory.append_message", self, "INSERT");
        let mut appended = self.append(span, thread, vec![message]).await?;
        appended.pop().ok_or(Error::ThreadNotFound)
    }

    /// Appends messages to a thread, atomically and in order. Concurrent
    /// appends to one thread are serialised; sequence numbers have no gaps.
    ///
    /// # Errors
    ///
    /// [`Error::ThreadNotFound`] if the handle's tenant has no such thread.
    pub async fn append_messages(
        &self,
        thread: ThreadId,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Message>> {
        let span = memory_span!("memory.append_messages", self, "INSERT");
        self.append(span, thread, messages).await
    }

    async fn append(
        &self,
        span: tracing::Span,
        thread: ThreadId,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Message>> {
        self.run(span, async {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            let count = i64::try_from(messages.len()).map_err(|_| Error::InvalidName {
                kind: "message batch",
                reason: "too many messages",
            })?;
            let (roles, contents): (Vec<&str>, Vec<Value>) = messages
                .into_iter()
                .map(|m| (m.role.as_str(), m.content))
                .unzip();
            let tenant = self.ctx.tenant();
            let mut tx = self.begin_bound().await?;
            let (last, namespace, audience): (i64, String, String) = sqlx::query_as(BUMP_SQL)
                .persistent(self.prepared())
                .bind(tenant.as_uuid())
                .bind(thread.as_uuid())
                .bind(count)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(Error::ThreadNotFound)?;
            let rows = sqlx::query(INSERT_SQL)
                .persistent(self.prepared())
                .bind(tenant.as_uuid())
                .bind(thread.as_uuid())
                .bind(last - count)
                .bind(roles)
                .bind(contents)
                .bind(namespace)
                .bind(audience)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            let mut out = rows
                .iter()
                .map(|row| Message::from_row(thread, row))
                .collect::<Result<Vec<_>>>()?;
            out.sort_by_key(|m| m.seq);
            Ok(out)
        })
        .await
    }

    /// A page of a thread's messages, oldest first, starting after `after`
    /// (from the beginning when `None`). A thread of another tenant reads as
    /// empty.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context, database errors otherwise.
    pub async fn messages(
        &self,
        thread: ThreadId,
        after: Option<MessageCursor>,
        limit: usize,
    ) -> Result<MessagePage> {
        self.run(memory_span!("memory.messages", self, "SELECT"), async {
            let limit = page_limit(limit);
            let mut ex = self.exec().await?;
            let rows = sqlx::query(PAGE_SQL)
                .persistent(self.prepared())
                .bind(self.bound())
                .bind(self.ctx.tenant().as_uuid())
                .bind(thread.as_uuid())
                .bind(after.map_or(0, |c| c.0))
                .bind(limit + 1)
                .fetch_all(&mut *ex)
                .await?;
            ex.finish().await?;
            let mut messages = rows
                .iter()
                .map(|row| Message::from_row(thread, row))
                .collect::<Result<Vec<_>>>()?;
            let more = i64::try_from(messages.len()).unwrap_or(i64::MAX) > limit;
            messages.truncate(usize::try_from(limit).unwrap_or(0));
            let next = if more {
                messages.last().map(Message::cursor)
            } else {
                None
            };
            Ok(MessagePage { messages, next })
        })
        .await
    }

    /// The last `n` messages of a thread, oldest first. A thread of another
    /// tenant reads as empty.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for an invalid context, database errors otherwise.
    pub async fn last_messages(&self, thread: ThreadId, n: usize) -> Result<Vec<Message>> {
        self.run(
            memory_span!("memory.last_messages", self, "SELECT"),
            async {
                let mut ex = self.exec().await?;
                let rows = sqlx::query(LAST_SQL)
                    .persistent(self.prepared())
                    .bind(self.bound())
                    .bind(self.ctx.tenant().as_uuid())
                    .bind(thread.as_uuid())
                    .bind(page_limit(n))
                    .fetch_all(&mut *ex)
                    .await?;
                ex.finish().await?;
                rows.iter()
                    .map(|row| Message::from_row(thread, row))
                    .collect()
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    //! The single-statement binding, tested on the crate's own SQL.

    use serde_json::json;
    use sqlx::{Connection, PgConnection, PgPool, Row};
    use tenant_core::{
        Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId, Purpose, TenantId,
    };

    use super::*;
    use crate::{MemoryAdmin, MemoryStore};

    #[tokio::test]
    async fn in_statement_binding_runs_before_the_row_security_qual() {
        let db = tokio::task::spawn_blocking(|| {
            tenant_testkit::TestPostgres::shared()
                .fresh_database()
                .unwrap()
        })
        .await
        .unwrap();
        let issuer = ContextIssuer::new(MasterKey::from_bytes(KeyId::new("k1").unwrap(), [3; 32]));
        let key = issuer.subkey(Purpose::Postgres);
        let owner = PgPool::connect(db.owner_url()).await.unwrap();
        let admin = MemoryAdmin::new(&owner, &key, &issuer.authority()).unwrap();
        admin.migrate(tenant_testkit::APP_ROLE).await.unwrap();
        admin.install_key().await.unwrap();
        let app = PgPool::connect(db.app_url()).await.unwrap();
        let ctx = |t| {
            issuer
                .context()
                .tenant(t)
                .principal(PrincipalId::new("p").unwrap())
                .capabilities(Capabilities::unrestricted())
                .issue()
                .unwrap()
        };
        let (a, b) = (ctx(TenantId::random()), ctx(TenantId::random()));
        let store_a = MemoryStore::builder()
            .pool(&app)
            .key(&key)
            .authority(&issuer.authority())
            .tenant(&a)
            .build()
            .unwrap();
        let store_b = MemoryStore::builder()
            .pool(&app)
            .key(&key)
            .authority(&issuer.authority())
            .tenant(&b)
            .build()
            .unwrap();
        let thread = store_a.create_thread("chat", json!({})).await.unwrap();
        store_a
            .append_message(thread.id, NewMessage::new(MessageRole::User, json!("a")))
            .await
            .unwrap();

        // In a transaction already bound to B, the statement that binds A
        // must see A's rows: had the policy's InitPlan run before the
        // in-statement set_config, it would have used B and found nothing.
        // Eight times on one connection: PostgreSQL switches prepared
        // statements to a generic plan after five executions.
        let mut conn = PgConnection::connect(db.app_url()).await.unwrap();
        for _ in 0..8 {
            let mut tx = conn.begin().await.unwrap();
            sqlx::query(crate::store::BIND_SQL)
                .bind(store_b.bound())
                .execute(&mut *tx)
                .await
                .unwrap();
            let rows = sqlx::query(LAST_SQL)
                .bind(store_a.bound())
                .bind(a.tenant().as_uuid())
                .bind(thread.id.as_uuid())
                .bind(20_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].get::<Value, _>("content"), json!("a"));
            tx.rollback().await.unwrap();
        }
        let mut tx = conn.begin().await.unwrap();

        // And the plan says why: the binding subquery is the outer side of
        // a nested loop whose inner side reads the table.
        let plan: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {LAST_SQL}")))
                .bind(store_a.bound())
                .bind(a.tenant().as_uuid())
                .bind(thread.id.as_uuid())
                .bind(20_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
        let plan = plan.join("\n");
        println!("{plan}");
        let position = |needle: &str| {
            plan.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {plan}"))
        };
        let (nested, outer, init, scan) = (
            position("Nested Loop"),
            position("->  Result"),
            position("InitPlan"),
            position("on messages"),
        );
        assert!(nested < outer && outer < init && init < scan, "{plan}");
        tx.rollback().await.unwrap();
    }
}

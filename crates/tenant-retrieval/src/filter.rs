//! Metadata filters, and the scoped filter every backend call carries.
//!
//! Callers build a [`MetadataFilter`] over their own metadata keys. The
//! client never merges it with the tenant condition by widening (no
//! `should` concatenation): it nests the caller's filter as one `must`
//! clause next to the tenant condition ([`ScopedFilter`]), so whatever the
//! caller writes can only narrow the tenant's points.

use tenant_core::TenantId;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::point::{META_FIELD, TENANT_FIELD};

/// A value to compare a metadata field with.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    /// A string (keyword match).
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for FilterValue {
    fn from(v: &str) -> Self {
        FilterValue::Str(v.to_owned())
    }
}
impl From<String> for FilterValue {
    fn from(v: String) -> Self {
        FilterValue::Str(v)
    }
}
impl From<i64> for FilterValue {
    fn from(v: i64) -> Self {
        FilterValue::Int(v)
    }
}
impl From<bool> for FilterValue {
    fn from(v: bool) -> Self {
        FilterValue::Bool(v)
    }
}

/// Numeric bounds for [`MetadataFilter::range`]; unset bounds are open.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Bounds {
    /// Greater than.
    pub gt: Option<f64>,
    /// Greater than or equal.
    pub gte: Option<f64>,
    /// Less than.
    pub lt: Option<f64>,
    /// Less than or equal.
    pub lte: Option<f64>,
}

/// A filter over the caller's metadata keys.
///
/// ```
/// use tenant_retrieval::{Bounds, MetadataFilter};
/// let f = MetadataFilter::all([
///     MetadataFilter::eq("lang", "en"),
///     MetadataFilter::range("year", Bounds { gte: Some(2020.0), ..Bounds::default() }),
///     MetadataFilter::not(MetadataFilter::eq("draft", true)),
/// ]);
/// # let _ = f;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataFilter(pub(crate) Node);

/// The filter tree shared by caller filters and the SDK's scope.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    /// `key` is a full payload path (`tenant_id`, `meta.lang`).
    Eq(String, FilterValue),
    In(String, Vec<FilterValue>),
    Range(String, Bounds),
    HasId(Vec<Uuid>),
}

impl MetadataFilter {
    /// `key` equals `value`.
    pub fn eq(key: impl Into<String>, value: impl Into<FilterValue>) -> Self {
        Self(Node::Eq(key.into(), value.into()))
    }

    /// `key` equals one of `values`.
    pub fn one_of<V: Into<FilterValue>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Self(Node::In(
            key.into(),
            values.into_iter().map(Into::into).collect(),
        ))
    }

    /// `key` is a number within `bounds`.
    pub fn range(key: impl Into<String>, bounds: Bounds) -> Self {
        Self(Node::Range(key.into(), bounds))
    }

    /// Every filter matches.
    pub fn all(filters: impl IntoIterator<Item = MetadataFilter>) -> Self {
        Self(Node::All(filters.into_iter().map(|f| f.0).collect()))
    }

    /// At least one filter matches.
    pub fn any(filters: impl IntoIterator<Item = MetadataFilter>) -> Self {
        Self(Node::Any(filters.into_iter().map(|f| f.0).collect()))
    }

    /// `filter` does not match.
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: MetadataFilter) -> Self {
        Self(Node::Not(Box::new(filter.0)))
    }

    /// Validates keys against the collection's clear fields and rewrites
    /// them to payload paths under `meta.`.
    pub(crate) fn into_payload_node(self, is_clear: &dyn Fn(&str) -> bool) -> Result<Node> {
        rewrite(self.0, is_clear)
    }
}

fn rewrite(node: Node, is_clear: &dyn Fn(&str) -> bool) -> Result<Node> {
    let key = |k: String| -> Result<String> {
        crate::document::validate_metadata_key(&k)?;
        if !is_clear(&k) {
            return Err(Error::FilterOnSealedField(k));
        }
        Ok(format!("{META_FIELD}.{k}"))
    };
    Ok(match node {
        Node::All(v) => Node::All(
            v.into_iter()
                .map(|n| rewrite(n, is_clear))
                .collect::<Result<_>>()?,
        ),
        Node::Any(v) => Node::Any(
            v.into_iter()
                .map(|n| rewrite(n, is_clear))
                .collect::<Result<_>>()?,
        ),
        Node::Not(n) => Node::Not(Box::new(rewrite(*n, is_clear)?)),
        Node::Eq(k, v) => Node::Eq(key(k)?, v),
        Node::In(k, v) => Node::In(key(k)?, v),
        Node::Range(k, b) => Node::Range(key(k)?, b),
        // Callers cannot construct it; reaching here would be a bug.
        Node::HasId(_) => return Err(Error::invalid("filter", "id conditions are SDK-only")),
    })
}

/// The filter every backend read, count, scroll and delete carries: the
/// tenant condition, and optionally one nested narrowing clause.
///
/// It can only be made inside this crate, so a backend is never handed an
/// unscoped request.
#[derive(Clone, Debug)]
pub struct ScopedFilter {
    tenant: TenantId,
    narrowing: Option<Node>,
}

impl ScopedFilter {
    pub(crate) fn tenant_only(tenant: TenantId) -> Self {
        Self {
            tenant,
            narrowing: None,
        }
    }

    pub(crate) fn narrowed(tenant: TenantId, narrowing: Node) -> Self {
        Self {
            tenant,
            narrowing: Some(narrowing),
        }
    }

    /// The tenant whose points this filter is limited to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// `must: [tenant_id == tenant, narrowing]` as a tree a backend
    /// translates verbatim.
    pub(crate) fn to_node(&self) -> Node {
        let tenant = Node::Eq(
            TENANT_FIELD.to_owned(),
            FilterValue::Str(self.tenant.to_string()),
        );
        match &self.narrowing {
            None => Node::All(vec![tenant]),
            Some(n) => Node::All(vec![tenant, n.clone()]),
        }
    }
}

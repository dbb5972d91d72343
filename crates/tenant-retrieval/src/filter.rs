//! Metadata filters, and the scoped filter every backend call carries.
//!
//! Callers build a [`MetadataFilter`] over their own metadata keys. The
//! client never merges it with the tenant condition by widening (no
//! `should` concatenation): it nests the caller's filter as one `must`
//! clause next to the tenant condition ([`ScopedFilter`]), so whatever the
//! caller writes can only narrow the tenant's points.
//!
//! Filters are bounded where they are built: a filter deeper than
//! [`MAX_FILTER_DEPTH`] or with more than [`MAX_FILTER_SIZE`] conditions
//! and values is kept only as a marker that fails with
//! [`Error::FilterTooDeep`] / [`Error::FilterTooLarge`] when used. So no
//! filter, however it was made (by a model, through rig, in a loop), can
//! hold a tree deep enough to exhaust the stack when it is translated,
//! compared or dropped.

use tenant_core::TenantId;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::point::{META_FIELD, TENANT_FIELD};

/// Deepest accepted filter (a leaf is depth 1; each `all`/`any`/`not`
/// adds one).
pub const MAX_FILTER_DEPTH: usize = 32;
/// Most conditions plus values (`one_of` counts each value) in one filter.
pub const MAX_FILTER_SIZE: usize = 1024;
/// Longest accepted string value in a filter, in bytes.
pub const MAX_FILTER_VALUE_LEN: usize = 4096;

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
/// Bounds must be finite ([`Error::NonFinite`] otherwise).
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
///
/// Depth and size are bounded where the filter is built: a filter deeper
/// than [`MAX_FILTER_DEPTH`] or with more than [`MAX_FILTER_SIZE`]
/// conditions and values is kept only as a marker that fails with
/// [`Error::FilterTooDeep`] / [`Error::FilterTooLarge`] when used, so no
/// filter, however it was made, holds a tree deep enough to exhaust the
/// stack when it is translated, compared or dropped:
///
/// ```
/// use tenant_retrieval::{MetadataFilter, MAX_FILTER_DEPTH};
/// let mut f = MetadataFilter::eq("a", 1);
/// for _ in 0..1_000_000 {
///     f = MetadataFilter::not(f);
/// }
/// assert_eq!(f.depth(), None); // over the limit: refused when used
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataFilter(Shape);

#[derive(Clone, Debug, PartialEq)]
enum Shape {
    Tree {
        node: Node,
        depth: usize,
        size: usize,
    },
    TooDeep,
    TooLarge,
}

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
    fn leaf(node: Node, size: usize) -> Self {
        if size > MAX_FILTER_SIZE {
            return Self(Shape::TooLarge);
        }
        Self(Shape::Tree {
            node,
            depth: 1,
            size,
        })
    }

    /// `key` equals `value`.
    pub fn eq(key: impl Into<String>, value: impl Into<FilterValue>) -> Self {
        Self::leaf(Node::Eq(key.into(), value.into()), 1)
    }

    /// `key` equals one of `values`.
    pub fn one_of<V: Into<FilterValue>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        let values: Vec<FilterValue> = values
            .into_iter()
            .take(MAX_FILTER_SIZE)
            .map(Into::into)
            .collect();
        let size = 1 + values.len();
        Self::leaf(Node::In(key.into(), values), size)
    }

    /// `key` is a number within `bounds`.
    pub fn range(key: impl Into<String>, bounds: Bounds) -> Self {
        Self::leaf(Node::Range(key.into(), bounds), 1)
    }

    /// Every filter matches.
    pub fn all(filters: impl IntoIterator<Item = MetadataFilter>) -> Self {
        Self::combine(filters, Node::All)
    }

    /// At least one filter matches.
    pub fn any(filters: impl IntoIterator<Item = MetadataFilter>) -> Self {
        Self::combine(filters, Node::Any)
    }

    /// `filter` does not match.
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: MetadataFilter) -> Self {
        match filter.0 {
            Shape::Tree { node, depth, size } => {
                Self::nest(Node::Not(Box::new(node)), depth + 1, size + 1)
            }
            poisoned => Self(poisoned),
        }
    }

    fn combine(
        filters: impl IntoIterator<Item = MetadataFilter>,
        make: fn(Vec<Node>) -> Node,
    ) -> Self {
        let mut nodes = Vec::new();
        let (mut depth, mut size) = (0, 1);
        for f in filters {
            match f.0 {
                Shape::Tree {
                    node,
                    depth: d,
                    size: s,
                } => {
                    depth = depth.max(d);
                    size += s;
                    if size > MAX_FILTER_SIZE {
                        return Self(Shape::TooLarge);
                    }
                    nodes.push(node);
                }
                poisoned => return Self(poisoned),
            }
        }
        Self::nest(make(nodes), depth + 1, size)
    }

    fn nest(node: Node, depth: usize, size: usize) -> Self {
        if depth > MAX_FILTER_DEPTH {
            // `node` is dropped here; it is at most MAX_FILTER_DEPTH deep.
            return Self(Shape::TooDeep);
        }
        if size > MAX_FILTER_SIZE {
            return Self(Shape::TooLarge);
        }
        Self(Shape::Tree { node, depth, size })
    }

    /// How deep the filter nests, or `None` if it is over a limit (and
    /// will be refused when used).
    pub fn depth(&self) -> Option<usize> {
        match &self.0 {
            Shape::Tree { depth, .. } => Some(*depth),
            _ => None,
        }
    }

    /// Validates keys against the collection's clear fields and values
    /// against the limits, and rewrites keys to payload paths under
    /// `meta.`.
    pub(crate) fn into_payload_node(self, is_clear: &dyn Fn(&str) -> bool) -> Result<Node> {
        match self.0 {
            Shape::Tree { node, .. } => rewrite(node, is_clear),
            Shape::TooDeep => Err(Error::FilterTooDeep {
                max: MAX_FILTER_DEPTH,
            }),
            Shape::TooLarge => Err(Error::FilterTooLarge {
                max: MAX_FILTER_SIZE,
            }),
        }
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
    let all = |v: Vec<Node>| -> Result<Vec<Node>> {
        v.into_iter().map(|n| rewrite(n, is_clear)).collect()
    };
    Ok(match node {
        Node::All(v) => Node::All(all(v)?),
        Node::Any(v) => Node::Any(all(v)?),
        Node::Not(n) => Node::Not(Box::new(rewrite(*n, is_clear)?)),
        Node::Eq(k, v) => {
            check_value(&v)?;
            Node::Eq(key(k)?, v)
        }
        Node::In(k, vs) => {
            vs.iter().try_for_each(check_value)?;
            Node::In(key(k)?, vs)
        }
        Node::Range(k, b) => {
            let finite = [b.gt, b.gte, b.lt, b.lte]
                .into_iter()
                .flatten()
                .all(f64::is_finite);
            if !finite {
                return Err(Error::NonFinite {
                    what: "range bound",
                });
            }
            Node::Range(key(k)?, b)
        }
        // Callers cannot construct it; reaching here would be a bug.
        Node::HasId(_) => return Err(Error::invalid("filter", "id conditions are SDK-only")),
    })
}

fn check_value(v: &FilterValue) -> Result<()> {
    match v {
        FilterValue::Str(s) if s.len() > MAX_FILTER_VALUE_LEN => Err(Error::invalid(
            "filter value",
            format!("longer than {MAX_FILTER_VALUE_LEN} bytes"),
        )),
        _ => Ok(()),
    }
}

/// The filter every backend read, count, scroll and delete carries: the
/// tenant condition, and optionally one nested narrowing clause.
///
/// Only this crate can make one, so a backend is never handed an unscoped
/// request.
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

    /// The same scope, additionally excluding `ids`.
    pub(crate) fn excluding(&self, ids: &[Uuid]) -> Self {
        if ids.is_empty() {
            return self.clone();
        }
        let not = Node::Not(Box::new(Node::HasId(ids.to_vec())));
        let narrowing = match &self.narrowing {
            None => not,
            Some(n) => Node::All(vec![n.clone(), not]),
        };
        Self::narrowed(self.tenant, narrowing)
    }

    /// `must: [tenant_id == tenant, narrowing]` as a tree a backend
    /// translates verbatim.
    #[cfg_attr(not(any(feature = "edge", feature = "server")), allow(dead_code))]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn clear(_: &str) -> bool {
        true
    }

    #[test]
    fn a_filter_nested_a_million_levels_is_a_typed_error_not_a_crash() {
        let mut f = MetadataFilter::eq("a", 1);
        for _ in 0..1_000_000 {
            f = MetadataFilter::not(f);
        }
        let mut g = MetadataFilter::eq("a", 1);
        for _ in 0..1_000_000 {
            g = MetadataFilter::all([g, MetadataFilter::eq("b", 2)]);
        }
        for f in [f, g] {
            assert!(matches!(
                f.clone().into_payload_node(&clear),
                Err(Error::FilterTooDeep {
                    max: MAX_FILTER_DEPTH
                })
            ));
            drop(f);
        }
    }

    #[test]
    fn the_depth_limit_is_exact() {
        let mut f = MetadataFilter::eq("a", 1);
        for _ in 1..MAX_FILTER_DEPTH {
            f = MetadataFilter::not(f);
        }
        assert_eq!(f.depth(), Some(MAX_FILTER_DEPTH));
        assert!(f.clone().into_payload_node(&clear).is_ok());
        assert_eq!(MetadataFilter::not(f).depth(), None);
    }

    #[test]
    fn wide_filters_and_long_value_lists_are_too_large() {
        let wide =
            MetadataFilter::any((0..MAX_FILTER_SIZE as i64).map(|i| MetadataFilter::eq("k", i)));
        assert!(matches!(
            wide.into_payload_node(&clear),
            Err(Error::FilterTooLarge { .. })
        ));
        let long = MetadataFilter::one_of("k", 0..u32::MAX as i64);
        assert!(matches!(
            long.into_payload_node(&clear),
            Err(Error::FilterTooLarge { .. })
        ));
        let ok = MetadataFilter::one_of("k", 0..100i64);
        assert!(ok.into_payload_node(&clear).is_ok());
    }

    #[test]
    fn non_finite_bounds_and_huge_values_are_refused() {
        for b in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let f = MetadataFilter::range(
                "n",
                Bounds {
                    lt: Some(b),
                    ..Bounds::default()
                },
            );
            assert!(matches!(
                f.into_payload_node(&clear),
                Err(Error::NonFinite {
                    what: "range bound"
                })
            ));
        }
        let f = MetadataFilter::eq("k", "x".repeat(MAX_FILTER_VALUE_LEN + 1));
        assert!(matches!(
            f.into_payload_node(&clear),
            Err(Error::InvalidInput { .. })
        ));
    }
}

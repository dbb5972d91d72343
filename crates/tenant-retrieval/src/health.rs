//! Isolation health of physical collections (what `tenant-doctor` and the
//! operator handle report). Reads no payloads.

/// One physical collection's isolation health.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CollectionHealth {
    /// The physical collection name.
    pub physical_name: String,
    /// Approximate number of points.
    pub points: usize,
    /// `tenant_id` has a payload index.
    pub tenant_index: bool,
    /// That index is a keyword index marked `is_tenant`.
    pub tenant_index_is_tenant: bool,
}

impl CollectionHealth {
    /// Whether the collection is set up as the SDK requires.
    pub fn is_healthy(&self) -> bool {
        self.tenant_index && self.tenant_index_is_tenant
    }
}

//! Logical collections, their settings, and the physical collections that
//! back them.
//!
//! Naming scheme (`prefix` defaults to `tr`):
//! - Pool: `<prefix>_<collection>_pool`, shared by every Pool tenant.
//! - Silo: `<prefix>_<collection>_t_<tenant uuid, 32 hex digits>`, one per
//!   Silo tenant.

use std::collections::BTreeSet;

use tenant_core::{IsolationTier, TenantId};

use crate::error::{Error, Result};

/// Longest accepted logical collection name.
pub const MAX_COLLECTION_NAME_LEN: usize = 48;

/// Similarity measure of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Distance {
    /// Cosine similarity (higher is closer).
    #[default]
    Cosine,
    /// Dot product (higher is closer).
    Dot,
    /// Euclidean distance (lower is closer).
    Euclid,
}

/// Whether and how a collection's payloads are sealed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Sealing {
    /// Text and metadata are stored in the clear.
    #[default]
    Off,
    /// Text and metadata are sealed (XChaCha20-Poly1305, per-tenant key);
    /// only the listed metadata keys are also stored in the clear so they
    /// can be filtered on.
    On {
        /// Metadata keys kept in the clear.
        filterable: BTreeSet<String>,
    },
}

/// A logical collection: name, vector size, distance and sealing.
///
/// ```
/// use tenant_retrieval::CollectionSpec;
/// let docs = CollectionSpec::new("docs", 384)?.sealed(["lang", "year"])?;
/// assert!(docs.is_sealed());
/// # Ok::<(), tenant_retrieval::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionSpec {
    name: String,
    dims: usize,
    distance: Distance,
    sealing: Sealing,
}

impl CollectionSpec {
    /// A cosine collection of `dims`-dimensional vectors, unsealed.
    pub fn new(name: impl Into<String>, dims: usize) -> Result<Self> {
        let name = name.into();
        validate_collection_name(&name)?;
        if dims == 0 || dims > 65_536 {
            return Err(Error::invalid(
                "dimensions",
                format!("{dims} is not in 1..=65536"),
            ));
        }
        Ok(Self {
            name,
            dims,
            distance: Distance::Cosine,
            sealing: Sealing::Off,
        })
    }

    /// Sets the distance.
    pub fn distance(mut self, distance: Distance) -> Self {
        self.distance = distance;
        self
    }

    /// Seals text and metadata, keeping `filterable` metadata keys in the
    /// clear.
    pub fn sealed<I, S>(mut self, filterable: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let filterable: BTreeSet<String> = filterable.into_iter().map(Into::into).collect();
        for key in &filterable {
            crate::document::validate_metadata_key(key)?;
        }
        self.sealing = Sealing::On { filterable };
        Ok(self)
    }

    /// The logical name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Vector dimensions.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The distance.
    pub fn distance_kind(&self) -> Distance {
        self.distance
    }

    /// The sealing setting.
    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// Whether payloads are sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self.sealing, Sealing::On { .. })
    }

    /// Whether metadata `key` is stored in the clear (always, when unsealed).
    pub fn is_clear(&self, key: &str) -> bool {
        match &self.sealing {
            Sealing::Off => true,
            Sealing::On { filterable } => filterable.contains(key),
        }
    }
}

/// Physical collection names for one platform (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    prefix: String,
}

impl Default for Naming {
    fn default() -> Self {
        Self {
            prefix: "tr".to_owned(),
        }
    }
}

impl Naming {
    /// Uses `prefix` (same rules as collection names).
    pub fn with_prefix(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        validate_collection_name(&prefix)?;
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The shared Pool collection of `collection`.
    pub fn pool(&self, collection: &str) -> String {
        format!("{}_{collection}_pool", self.prefix)
    }

    /// The dedicated Silo collection of `tenant` for `collection`.
    pub fn silo(&self, collection: &str, tenant: TenantId) -> String {
        format!(
            "{}{}",
            self.silo_prefix(collection),
            tenant.as_uuid().simple()
        )
    }

    /// What every Silo collection of `collection` starts with.
    pub(crate) fn silo_prefix(&self, collection: &str) -> String {
        format!("{}_{collection}_t_", self.prefix)
    }

    /// The physical collection of `tenant` on `tier`.
    pub fn physical(&self, collection: &str, tenant: TenantId, tier: IsolationTier) -> String {
        match tier {
            IsolationTier::Pool => self.pool(collection),
            IsolationTier::Silo => self.silo(collection, tenant),
        }
    }

    /// The collection holding the routing table (server backend).
    pub fn routes(&self) -> String {
        format!("{}__routes", self.prefix)
    }
}

pub(crate) fn validate_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_COLLECTION_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "collection name",
            format!("`{name}`: use 1-{MAX_COLLECTION_NAME_LEN} of [a-z0-9_-]"),
        ))
    }
}

//! Capabilities: what a context may touch.
//!
//! Plain data: sets of names plus limits, with a stable SHA-256 digest over a
//! canonical encoding. A delegated context's capabilities must be a subset
//! of its parent's ([`Capabilities::check_narrows`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::encoding::{Reader, Writer};
use crate::error::{Error, Result};
use crate::ids::validate_name;

/// The longest capability name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// The most names one scope may hold.
pub const MAX_SCOPE_NAMES: usize = 4096;

fn name_char(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

/// A set of names a context may use: everything, or only the listed names.
///
/// Opaque so that every name is validated ([`Scope::only`]); the canonical
/// encoding relies on that.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ScopeRepr", into = "ScopeRepr")]
pub struct Scope(ScopeInner);

#[derive(Clone, PartialEq, Eq)]
enum ScopeInner {
    Any,
    Only(Arc<BTreeSet<Box<str>>>),
}

/// The serde form of a [`Scope`]; deserialising goes through
/// [`Scope::only`] so names are always validated.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScopeRepr {
    Any,
    Only(Vec<String>),
}

impl TryFrom<ScopeRepr> for Scope {
    type Error = Error;

    fn try_from(r: ScopeRepr) -> Result<Self> {
        match r {
            ScopeRepr::Any => Ok(Scope::any()),
            ScopeRepr::Only(names) => Scope::only(names),
        }
    }
}

impl From<Scope> for ScopeRepr {
    fn from(s: Scope) -> Self {
        match s.0 {
            ScopeInner::Any => ScopeRepr::Any,
            ScopeInner::Only(set) => ScopeRepr::Only(set.iter().map(|n| n.to_string()).collect()),
        }
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ScopeInner::Any => f.write_str("Any"),
            ScopeInner::Only(names) => f.debug_set().entries(names.iter()).finish(),
        }
    }
}

impl Scope {
    /// No names at all.
    pub fn none() -> Self {
        Scope(ScopeInner::Only(Arc::default()))
    }

    /// Every name.
    pub fn any() -> Self {
        Scope(ScopeInner::Any)
    }

    /// Whether this is the unrestricted scope.
    pub fn is_any(&self) -> bool {
        matches!(self.0, ScopeInner::Any)
    }

    /// Only the given names; each must be 1–128 printable characters without
    /// whitespace.
    pub fn only<I, S>(names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            validate_name(name, "capability name", MAX_NAME_LEN, name_char)?;
            set.insert(Box::from(name));
            if set.len() > MAX_SCOPE_NAMES {
                return Err(Error::InvalidId {
                    kind: "capability scope",
                    reason: "too many names",
                });
            }
        }
        Ok(Scope(ScopeInner::Only(Arc::new(set))))
    }

    /// Whether `name` is in scope.
    pub fn allows(&self, name: &str) -> bool {
        match &self.0 {
            ScopeInner::Any => true,
            ScopeInner::Only(set) => set.contains(name),
        }
    }

    /// Whether every name of `self` is also in `parent`.
    pub fn is_subset_of(&self, parent: &Scope) -> bool {
        match (&self.0, &parent.0) {
            (_, ScopeInner::Any) => true,
            (ScopeInner::Any, ScopeInner::Only(_)) => false,
            (ScopeInner::Only(child), ScopeInner::Only(parent)) => {
                Arc::ptr_eq(child, parent) || child.is_subset(parent)
            }
        }
    }

    /// The names this scope lists; `None` for [`Scope::any`].
    pub fn names(&self) -> Option<impl Iterator<Item = &str>> {
        match &self.0 {
            ScopeInner::Any => None,
            ScopeInner::Only(set) => Some(set.iter().map(|s| &**s)),
        }
    }

    /// The intersection of two scopes.
    pub fn intersect(&self, other: &Scope) -> Scope {
        match (&self.0, &other.0) {
            (ScopeInner::Any, _) => other.clone(),
            (_, ScopeInner::Any) => self.clone(),
            (ScopeInner::Only(a), ScopeInner::Only(b)) => Scope(ScopeInner::Only(Arc::new(
                a.intersection(b).cloned().collect(),
            ))),
        }
    }

    fn encode(&self, w: &mut Writer) {
        match &self.0 {
            ScopeInner::Any => {
                w.u8(0);
            }
            ScopeInner::Only(set) => {
                w.u8(1).count(set.len());
                for name in set.iter() {
                    w.str(name);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8()? {
            0 => Ok(Scope::any()),
            1 => {
                let n = r.u16()? as usize;
                let mut names = Vec::with_capacity(n.min(MAX_SCOPE_NAMES));
                for _ in 0..n {
                    names.push(r.str()?);
                }
                Scope::only(names).map_err(|_| Error::MalformedToken("invalid capability name"))
            }
            _ => Err(Error::MalformedToken("unknown scope tag")),
        }
    }
}

/// What a context may do: tools, retrieval collections, memory namespaces,
/// models, a token budget and how many further delegation levels it may
/// create. Expiry is carried by the context itself.
///
/// ```
/// use tenant_core::Capabilities;
/// let caps = Capabilities::none()
///     .with_tools(["search", "calculator"])?
///     .with_collections(["docs"])?
///     .with_token_budget(50_000)
///     .with_max_delegation_depth(2);
/// assert!(caps.tools().allows("search"));
/// assert!(!caps.tools().allows("shell"));
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    tools: Scope,
    collections: Scope,
    memory_namespaces: Scope,
    models: Scope,
    token_budget: Option<u64>,
    max_delegation_depth: u8,
}

impl Capabilities {
    /// Nothing allowed: no tools, collections, namespaces or models, a zero
    /// token budget, no delegation. Widen with the `with_*` methods.
    pub fn none() -> Self {
        Self {
            tools: Scope::none(),
            collections: Scope::none(),
            memory_namespaces: Scope::none(),
            models: Scope::none(),
            token_budget: Some(0),
            max_delegation_depth: 0,
        }
    }

    /// Everything allowed, unlimited budget, delegation depth 8. Meant for a
    /// platform's root contexts; sub-agents should always be narrowed.
    pub fn unrestricted() -> Self {
        Self {
            tools: Scope::any(),
            collections: Scope::any(),
            memory_namespaces: Scope::any(),
            models: Scope::any(),
            token_budget: None,
            max_delegation_depth: 8,
        }
    }

    /// Sets the allowed tools.
    pub fn with_tools<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> Result<Self> {
        self.tools = Scope::only(names)?;
        Ok(self)
    }

    /// Sets the allowed retrieval collections.
    pub fn with_collections<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> Result<Self> {
        self.collections = Scope::only(names)?;
        Ok(self)
    }

    /// Sets the allowed memory namespaces.
    pub fn with_memory_namespaces<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> Result<Self> {
        self.memory_namespaces = Scope::only(names)?;
        Ok(self)
    }

    /// Sets the allowed models.
    pub fn with_models<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> Result<Self> {
        self.models = Scope::only(names)?;
        Ok(self)
    }

    /// Replaces one scope wholesale (e.g. [`Scope::any`]).
    pub fn with_scope(mut self, kind: ScopeKind, scope: Scope) -> Self {
        *self.scope_mut(kind) = scope;
        self
    }

    /// Sets a token budget.
    pub fn with_token_budget(mut self, tokens: u64) -> Self {
        self.token_budget = Some(tokens);
        self
    }

    /// Removes the token budget (unlimited).
    pub fn with_unlimited_tokens(mut self) -> Self {
        self.token_budget = None;
        self
    }

    /// Sets how many further levels of delegation are allowed.
    pub fn with_max_delegation_depth(mut self, depth: u8) -> Self {
        self.max_delegation_depth = depth;
        self
    }

    /// Allowed tools.
    pub fn tools(&self) -> &Scope {
        &self.tools
    }

    /// Allowed retrieval collections.
    pub fn collections(&self) -> &Scope {
        &self.collections
    }

    /// Allowed memory namespaces.
    pub fn memory_namespaces(&self) -> &Scope {
        &self.memory_namespaces
    }

    /// Allowed models.
    pub fn models(&self) -> &Scope {
        &self.models
    }

    /// One scope by kind.
    pub fn scope(&self, kind: ScopeKind) -> &Scope {
        match kind {
            ScopeKind::Tools => &self.tools,
            ScopeKind::Collections => &self.collections,
            ScopeKind::MemoryNamespaces => &self.memory_namespaces,
            ScopeKind::Models => &self.models,
        }
    }

    fn scope_mut(&mut self, kind: ScopeKind) -> &mut Scope {
        match kind {
            ScopeKind::Tools => &mut self.tools,
            ScopeKind::Collections => &mut self.collections,
            ScopeKind::MemoryNamespaces => &mut self.memory_namespaces,
            ScopeKind::Models => &mut self.models,
        }
    }

    /// Token budget; `None` is unlimited.
    pub fn token_budget(&self) -> Option<u64> {
        self.token_budget
    }

    /// How many further delegation levels are allowed.
    pub fn max_delegation_depth(&self) -> u8 {
        self.max_delegation_depth
    }

    /// `Ok` when `self` grants nothing that `parent` does not; otherwise a
    /// [`Error::Widening`] naming the first capability that widens.
    pub fn check_narrows(&self, parent: &Capabilities) -> Result<()> {
        for kind in ScopeKind::ALL {
            if !self.scope(kind).is_subset_of(parent.scope(kind)) {
                return Err(Error::Widening {
                    capability: kind.name(),
                });
            }
        }
        let budget_ok = match (self.token_budget, parent.token_budget) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(child), Some(parent)) => child <= parent,
        };
        if !budget_ok {
            return Err(Error::Widening {
                capability: "token_budget",
            });
        }
        if self.max_delegation_depth > parent.max_delegation_depth {
            return Err(Error::Widening {
                capability: "max_delegation_depth",
            });
        }
        Ok(())
    }

    /// The intersection of two capability sets (the narrower of each limit).
    pub fn intersect(&self, other: &Capabilities) -> Capabilities {
        let token_budget = match (self.token_budget, other.token_budget) {
            (None, b) | (b, None) => b,
            (Some(a), Some(b)) => Some(a.min(b)),
        };
        Capabilities {
            tools: self.tools.intersect(&other.tools),
            collections: self.collections.intersect(&other.collections),
            memory_namespaces: self.memory_namespaces.intersect(&other.memory_namespaces),
            models: self.models.intersect(&other.models),
            token_budget,
            max_delegation_depth: self.max_delegation_depth.min(other.max_delegation_depth),
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        for kind in ScopeKind::ALL {
            self.scope(kind).encode(w);
        }
        match self.token_budget {
            None => w.u8(0),
            Some(b) => w.u8(1).u64(b),
        };
        w.u8(self.max_delegation_depth);
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let tools = Scope::decode(r)?;
        let collections = Scope::decode(r)?;
        let memory_namespaces = Scope::decode(r)?;
        let models = Scope::decode(r)?;
        let token_budget = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            _ => return Err(Error::MalformedToken("unknown budget tag")),
        };
        Ok(Self {
            tools,
            collections,
            memory_namespaces,
            models,
            token_budget,
            max_delegation_depth: r.u8()?,
        })
    }

    /// A stable SHA-256 digest of the canonical encoding. Equal capability
    /// sets always have equal digests, across processes and versions of this
    /// crate with the same encoding version.
    pub fn digest(&self) -> [u8; 32] {
        let mut w = Writer::with_capacity(128);
        w.raw(b"tenant-sdk/capabilities/v1");
        self.encode(&mut w);
        Sha256::digest(w.as_slice()).into()
    }
}

/// The four name-set capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// Tool names.
    Tools,
    /// Retrieval collections.
    Collections,
    /// Memory namespaces.
    MemoryNamespaces,
    /// Model names.
    Models,
}

impl ScopeKind {
    /// All kinds, in canonical order.
    pub const ALL: [ScopeKind; 4] = [
        ScopeKind::Tools,
        ScopeKind::Collections,
        ScopeKind::MemoryNamespaces,
        ScopeKind::Models,
    ];

    /// The name used in errors.
    pub fn name(self) -> &'static str {
        match self {
            ScopeKind::Tools => "tools",
            ScopeKind::Collections => "collections",
            ScopeKind::MemoryNamespaces => "memory_namespaces",
            ScopeKind::Models => "models",
        }
    }
}

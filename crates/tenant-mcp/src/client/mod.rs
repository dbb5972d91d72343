//! Remote MCP servers per tenant: [`McpRemotes`] (platform-wide) and the
//! tenant-scoped [`McpClient`] handle.

mod connection;
mod remote_schema;
mod remote_tool;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tenant_core::{Scoped, TenantContext, TenantId, WantsTenant};
use tenant_tools::{
    EgressClient, EgressPolicy, Redactor, ToolInfo, ToolRegistry, Vault, MAX_TOOL_NAME_LEN,
};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::resource::ResourceUrl;
use crate::token::TokenMinter;
use connection::Endpoint;
use remote_tool::{Definition, RemoteTool, Slot};

pub use remote_schema::{
    MAX_REMOTE_DESCRIPTION, MAX_REMOTE_SCHEMA_BYTES, MAX_REMOTE_SCHEMA_DEPTH,
    MAX_REMOTE_SCHEMA_NODES,
};

/// The default bound on one exchange with a remote server.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);
/// The most tools one registration may import.
pub const MAX_IMPORTED_TOOLS: usize = 64;
/// The longest server alias.
pub const MAX_ALIAS_LEN: usize = 32;

/// How calls to a remote server authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteAuth {
    /// A token minted per call by the platform's [`TokenMinter`]: audience
    /// the server's resource URL, the calling context's tenant, principal
    /// and agent, the one tool called, a short lifetime.
    MintedToken,
    /// The tenant's vault secret for `integration`, sent as a bearer token.
    /// Calls obtain it through the executor's credentials (so the tenant's
    /// policy must grant the integration) and it is redacted from output.
    VaultBearer {
        /// The vault integration holding the token.
        integration: String,
    },
}

/// A remote MCP server to register for a tenant.
///
/// ```
/// use tenant_mcp::{RemoteAuth, RemoteServer};
/// let crm = RemoteServer::new("crm", "https://crm.example.com/mcp")?
///     .import(["search_contacts", "get_contact"])
///     .auth(RemoteAuth::VaultBearer { integration: "crm".into() });
/// assert!(RemoteServer::new("CRM!", "https://crm.example.com/mcp").is_err());
/// # Ok::<(), tenant_mcp::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RemoteServer {
    alias: String,
    resource: ResourceUrl,
    auth: RemoteAuth,
    import: Vec<String>,
    allow_internal: bool,
    roots: Vec<Vec<u8>>,
}

impl RemoteServer {
    /// The server at `url` (its canonical MCP endpoint, see
    /// [`ResourceUrl`]), known to the tenant as `alias` (1 to 32 of
    /// `a-z`, `0-9`, `-`): its tools are imported as `mcp__<alias>__<tool>`.
    /// Calls authenticate with [`RemoteAuth::MintedToken`] unless
    /// [`auth`](Self::auth) says otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAlias`], [`Error::InvalidResource`].
    pub fn new(alias: &str, url: &str) -> Result<Self> {
        validate_alias(alias)?;
        Ok(Self {
            alias: alias.to_owned(),
            resource: ResourceUrl::parse(url)?,
            auth: RemoteAuth::MintedToken,
            import: Vec::new(),
            allow_internal: false,
            roots: Vec::new(),
        })
    }

    /// How calls authenticate.
    pub fn auth(mut self, auth: RemoteAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The remote tools to import (the tenant's allowlist for this server;
    /// names as the server lists them). Nothing else the server offers is
    /// ever imported.
    pub fn import<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for tool in tools {
            let tool = tool.into();
            if !self.import.contains(&tool) {
                self.import.push(tool);
            }
        }
        self
    }

    /// Allows the server's host to resolve to an internal address
    /// (loopback, private, link-local): off by default, so a registration
    /// cannot point the platform at its own network.
    pub fn allow_internal(mut self) -> Self {
        self.allow_internal = true;
        self
    }

    /// Also trusts this PEM CA certificate for the server's TLS.
    pub fn trust_pem(mut self, pem: &[u8]) -> Self {
        self.roots.push(pem.to_vec());
        self
    }

    /// The alias.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The server's resource URL.
    pub fn resource(&self) -> &ResourceUrl {
        &self.resource
    }

    /// The only destination the registration's requests may reach.
    fn egress(&self) -> Result<EgressClient> {
        let entry = self.resource.host_port();
        let mut policy = if self.allow_internal {
            EgressPolicy::deny_all().allow_internal(&entry)?
        } else {
            EgressPolicy::deny_all().allow(&entry)?
        };
        for pem in &self.roots {
            policy = policy.trust_pem(pem)?;
        }
        Ok(EgressClient::new(policy)?)
    }
}

fn validate_alias(alias: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidAlias {
            alias: alias.chars().take(64).collect(),
            reason,
        })
    };
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return bad("an alias is 1 to 32 characters");
    }
    if !alias
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("an alias holds only `a-z`, `0-9` and `-`");
    }
    Ok(())
}

/// The registry name of `tool` imported from `alias`.
fn local_name(alias: &str, tool: &str) -> String {
    format!("mcp__{alias}__{tool}")
}

/// A registered server, as calls use it.
pub(crate) struct Registration {
    alias: String,
    auth: RemoteAuth,
    endpoint: Endpoint,
    /// (registry name, remote name) of every imported tool.
    tools: Vec<(String, String)>,
}

/// One registry entry of an alias: its slot, and the definition it was
/// registered with (registry entries cannot change).
struct Entry {
    slot: Arc<Slot>,
    definition: Definition,
}

/// Everything ever imported under one alias, owned by one tenant.
struct Alias {
    owner: TenantId,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
struct State {
    aliases: HashMap<String, Alias>,
    tenants: HashMap<TenantId, BTreeMap<String, Arc<Registration>>>,
}

struct Inner {
    registry: ToolRegistry,
    minter: Option<TokenMinter>,
    vault: Option<Arc<dyn Vault>>,
    timeout: Duration,
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The platform's remote MCP servers, registered per tenant. Cheap to
/// clone.
///
/// Imported tools become ordinary tools of the platform's
/// [`ToolRegistry`], named `mcp__<alias>__<tool>`, so a tenant's
/// [`ToolExecutor`](tenant_tools::ToolExecutor) lists and calls them like
/// any other tool (its policy and context must allow them) and every
/// adapter built on the executor (rig's included) sees them. Each entry
/// belongs to the tenant that imported it: a call from a context of any
/// other tenant is [`ToolNotAllowed`](tenant_tools::Error::ToolNotAllowed),
/// whatever that tenant's policy lists. An alias is the tenant's for good
/// (registry entries are never removed; a removed server's tools refuse
/// every call), so aliases are unique across the platform.
#[derive(Clone)]
pub struct McpRemotes {
    inner: Arc<Inner>,
}

impl fmt::Debug for McpRemotes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpRemotes")
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Configures [`McpRemotes`]: [`registry`](Self::registry) is required;
/// [`minter`](Self::minter) for servers authenticated with minted tokens,
/// [`vault`](Self::vault) for servers authenticated with vault secrets.
#[derive(Default)]
#[must_use = "a builder does nothing until build() is called"]
pub struct McpRemotesBuilder {
    registry: Option<ToolRegistry>,
    minter: Option<TokenMinter>,
    vault: Option<Arc<dyn Vault>>,
    timeout: Option<Duration>,
}

impl fmt::Debug for McpRemotesBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpRemotesBuilder").finish_non_exhaustive()
    }
}

impl McpRemotesBuilder {
    /// The registry imported tools are added to (it carries the platform
    /// authority every context is admitted by).
    pub fn registry(mut self, registry: &ToolRegistry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Mints per-call tokens for [`RemoteAuth::MintedToken`] servers
    /// (made from the issuer of the registry's authority: it admits only
    /// that authority's contexts).
    pub fn minter(mut self, minter: &TokenMinter) -> Self {
        self.minter = Some(minter.clone());
        self
    }

    /// The vault that holds [`RemoteAuth::VaultBearer`] secrets (read when
    /// a server is registered; calls read it through the executor's).
    pub fn vault<V: Vault>(mut self, vault: &Arc<V>) -> Self {
        let vault: Arc<dyn Vault> = vault.clone();
        self.vault = Some(vault);
        self
    }

    /// The bound on one exchange with a remote server (connection, session
    /// set-up, request and close), default [`DEFAULT_REMOTE_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Builds.
    ///
    /// # Errors
    ///
    /// [`Error::MissingConfiguration`] without a registry,
    /// [`Error::InvalidConfiguration`] for a zero timeout.
    pub fn build(self) -> Result<McpRemotes> {
        let registry = self
            .registry
            .ok_or(Error::MissingConfiguration("registry"))?;
        let timeout = self.timeout.unwrap_or(DEFAULT_REMOTE_TIMEOUT);
        if timeout.is_zero() {
            return Err(Error::InvalidConfiguration(
                "the remote timeout must be positive".into(),
            ));
        }
        Ok(McpRemotes {
            inner: Arc::new(Inner {
                registry,
                minter: self.minter,
                vault: self.vault,
                timeout,
                state: Mutex::default(),
            }),
        })
    }
}

impl McpRemotes {
    /// Starts a builder.
    pub fn builder() -> McpRemotesBuilder {
        McpRemotesBuilder::default()
    }
}

/// Builds an [`McpClient`]: [`remotes`](Self::remotes), then
/// [`tenant`](McpClientBuilder::<WantsTenant>::tenant)`(&ctx)`, then
/// [`build`](McpClientBuilder::<Scoped>::build).
#[must_use = "a builder does nothing until build() is called"]
pub struct McpClientBuilder<State> {
    remotes: Option<McpRemotes>,
    state: State,
    _marker: PhantomData<State>,
}

impl<S> fmt::Debug for McpClientBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClientBuilder").finish_non_exhaustive()
    }
}

impl<S> McpClientBuilder<S> {
    /// The platform's remote servers.
    pub fn remotes(mut self, remotes: &McpRemotes) -> Self {
        self.remotes = Some(remotes.clone());
        self
    }
}

impl McpClientBuilder<WantsTenant> {
    /// Scopes the handle to `ctx`'s tenant and capabilities.
    pub fn tenant(self, ctx: &TenantContext) -> McpClientBuilder<Scoped> {
        McpClientBuilder {
            remotes: self.remotes,
            state: Scoped::new(ctx),
            _marker: PhantomData,
        }
    }
}

impl McpClientBuilder<Scoped> {
    /// Admits the context and builds the handle.
    ///
    /// # Errors
    ///
    /// [`Error::MissingConfiguration`], [`Error::Context`].
    pub fn build(self) -> Result<McpClient> {
        let remotes = self.remotes.ok_or(Error::MissingConfiguration("remotes"))?;
        let ctx = self
            .state
            .into_admitted_context(remotes.inner.registry.authority())?;
        Ok(McpClient { remotes, ctx })
    }
}

/// What a context sees of one registered server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteServerInfo {
    /// The alias.
    pub alias: String,
    /// The server's resource URL.
    pub resource: ResourceUrl,
    /// The imported tools this context may use (registry names).
    pub tools: Vec<String>,
}

/// One tenant's remote MCP servers, for one context.
///
/// Made only from a context ([`McpClient::builder`]); no method takes a
/// tenant id. Registration and removal need a root context (a delegated
/// context can only narrow); [`servers`](Self::servers) shows the servers
/// with at least one tool the context may use, and
/// [`delegate`](Self::delegate) gives a sub-agent a view narrowed by its
/// own capabilities.
#[derive(Clone)]
pub struct McpClient {
    remotes: McpRemotes,
    ctx: TenantContext,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Starts a builder.
    pub fn builder() -> McpClientBuilder<WantsTenant> {
        McpClientBuilder {
            remotes: None,
            state: WantsTenant,
            _marker: PhantomData,
        }
    }

    /// The handle's context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    fn admit(&self) -> Result<()> {
        Ok(self.remotes.inner.registry.authority().admit(&self.ctx)?)
    }

    fn admit_root(&self) -> Result<()> {
        self.admit()?;
        if self.ctx.depth() > 0 {
            self.ctx.audit_denied(
                "mcp.register",
                "remote servers",
                &Error::DelegatedRegistration,
            );
            return Err(Error::DelegatedRegistration);
        }
        Ok(())
    }

    /// A handle for a sub-agent: `child` must descend from this handle's
    /// context; it sees only the servers and tools its capabilities allow.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] (`ForeignAuthority`, `NotDescendant`, ...).
    pub fn delegate(&self, child: &TenantContext) -> Result<McpClient> {
        let authority = self.remotes.inner.registry.authority();
        authority.admit(child)?;
        self.admit()?;
        self.ctx.check_descendant(child)?;
        Ok(McpClient {
            remotes: self.remotes.clone(),
            ctx: child.clone(),
        })
    }

    /// The tenant's servers with at least one imported tool this context's
    /// capabilities allow, and those tools (the tenant's policy applies on
    /// top, in the executor).
    ///
    /// # Errors
    ///
    /// [`Error::Context`].
    pub fn servers(&self) -> Result<Vec<RemoteServerInfo>> {
        self.admit()?;
        let allowed = self.ctx.capabilities().tools();
        let state = self.remotes.inner.lock();
        let Some(mine) = state.tenants.get(&self.ctx.tenant()) else {
            return Ok(Vec::new());
        };
        Ok(mine
            .values()
            .filter_map(|r| {
                let tools: Vec<String> = r
                    .tools
                    .iter()
                    .map(|(name, _)| name.clone())
                    .filter(|name| allowed.allows(name))
                    .collect();
                (!tools.is_empty()).then(|| RemoteServerInfo {
                    alias: r.alias.clone(),
                    resource: r.endpoint.resource.clone(),
                    tools,
                })
            })
            .collect())
    }

    /// Registers `server` for this tenant: lists its tools with this
    /// context's credential, checks each tool named by
    /// [`RemoteServer::import`] (name, description, schema size, depth and
    /// enforceability), and adds them to the registry as
    /// `mcp__<alias>__<tool>`. All or nothing: any refused tool refuses the
    /// registration.
    ///
    /// Returns the imported tools as the registry shows them. The tenant's
    /// [`ToolPolicy`](tenant_tools::ToolPolicy) and each context's
    /// capabilities decide who may use them.
    ///
    /// # Errors
    ///
    /// [`Error::DelegatedRegistration`], [`Error::AliasTaken`] (also for an
    /// alias of another tenant), [`Error::RemoteToolRefused`],
    /// [`Error::RemoteUnauthorized`] / [`Error::RemoteForbidden`] /
    /// [`Error::Remote`] / [`Error::RemoteTimeout`] from the listing,
    /// [`Error::Tools`] (egress refused, vault secret missing, a name a
    /// platform tool already has), [`Error::MissingConfiguration`].
    pub async fn register(&self, server: RemoteServer) -> Result<Vec<ToolInfo>> {
        self.admit_root()?;
        self.register_admitted(server)
            .instrument(self.ctx.span())
            .await
    }

    async fn register_admitted(&self, server: RemoteServer) -> Result<Vec<ToolInfo>> {
        if server.import.is_empty() || server.import.len() > MAX_IMPORTED_TOOLS {
            return Err(Error::InvalidConfiguration(format!(
                "a server imports 1 to {MAX_IMPORTED_TOOLS} tools"
            )));
        }
        let reserved = self.reserve(&server.alias)?;
        let out = self.import(&server).await;
        if out.is_err() && reserved {
            self.release(&server.alias);
        }
        match &out {
            Ok(_) => self.ctx.audit_allowed("mcp.register", &server.alias),
            Err(e) => self.ctx.audit_denied("mcp.register", &server.alias, e),
        }
        out
    }

    /// Claims `alias` for this tenant; `true` when it was free before.
    fn reserve(&self, alias: &str) -> Result<bool> {
        let tenant = self.ctx.tenant();
        let mut state = self.remotes.inner.lock();
        let registered = state
            .tenants
            .get(&tenant)
            .is_some_and(|m| m.contains_key(alias));
        match state.aliases.get(alias) {
            _ if registered => Err(Error::AliasTaken {
                alias: alias.to_owned(),
            }),
            Some(a) if a.owner != tenant => Err(Error::AliasTaken {
                alias: alias.to_owned(),
            }),
            Some(_) => Ok(false),
            None => {
                state.aliases.insert(
                    alias.to_owned(),
                    Alias {
                        owner: tenant,
                        entries: HashMap::new(),
                    },
                );
                Ok(true)
            }
        }
    }

    /// Gives back an alias claimed by a registration that failed before it
    /// added anything to the registry.
    fn release(&self, alias: &str) {
        let mut state = self.remotes.inner.lock();
        if state
            .aliases
            .get(alias)
            .is_some_and(|a| a.owner == self.ctx.tenant() && a.entries.is_empty())
        {
            state.aliases.remove(alias);
        }
    }

    async fn import(&self, server: &RemoteServer) -> Result<Vec<ToolInfo>> {
        let inner = &self.remotes.inner;
        let endpoint = Endpoint {
            resource: server.resource.clone(),
            egress: server.egress()?,
            timeout: inner.timeout,
        };
        let bearer = self.listing_credential(server).await?;
        let listed = endpoint.list(&bearer).await?;
        // A definition that repeats the credential would put it in front of
        // the model in every tool listing.
        let credential = Redactor::new();
        credential.remember(&bearer);
        let integrations = match &server.auth {
            RemoteAuth::MintedToken => Vec::new(),
            RemoteAuth::VaultBearer { integration } => vec![integration.clone()],
        };
        let mut tools = Vec::with_capacity(server.import.len());
        for remote_name in &server.import {
            let refused = |reason: String| Error::RemoteToolRefused {
                tool: remote_name.chars().take(128).collect(),
                reason,
            };
            let tool = listed
                .iter()
                .find(|t| t.name == remote_name.as_str())
                .ok_or_else(|| refused("the server does not offer it".into()))?;
            let description = tool.description.as_deref().unwrap_or_default().to_owned();
            remote_schema::check_name_and_description(remote_name, &description)
                .map_err(refused)?;
            let name = local_name(&server.alias, remote_name);
            if name.len() > MAX_TOOL_NAME_LEN {
                return Err(refused(format!(
                    "`{name}` is longer than {MAX_TOOL_NAME_LEN} bytes"
                )));
            }
            let schema = Value::Object((*tool.input_schema).clone());
            if credential.contains_secret(description.as_bytes())
                || credential.contains_secret(schema.to_string().as_bytes())
            {
                return Err(refused("its definition repeats the credential".into()));
            }
            let schema = remote_schema::check_schema(&schema)
                .map_err(refused)?
                .as_json()
                .clone();
            tools.push(RemoteTool {
                name,
                remote_name: remote_name.clone(),
                description,
                schema,
                integrations: integrations.clone(),
                owner: self.ctx.tenant(),
                slot: Arc::default(),
                minter: inner.minter.clone(),
            });
        }
        let registration = Arc::new(Registration {
            alias: server.alias.clone(),
            auth: server.auth.clone(),
            endpoint,
            tools: tools
                .iter()
                .map(|t| (t.name.clone(), t.remote_name.clone()))
                .collect(),
        });
        self.commit(registration, tools)
    }

    /// The credential the tool list is read with: a token minted for the
    /// tools being imported, or the tenant's vault secret.
    async fn listing_credential(&self, server: &RemoteServer) -> Result<SecretString> {
        let inner = &self.remotes.inner;
        match &server.auth {
            RemoteAuth::MintedToken => {
                let minter = inner
                    .minter
                    .as_ref()
                    .ok_or(Error::MissingConfiguration("token minter"))?;
                minter.mint_for_remote(&self.ctx, &server.resource, server.import.clone())
            }
            RemoteAuth::VaultBearer { integration } => {
                let vault = inner
                    .vault
                    .as_ref()
                    .ok_or(Error::MissingConfiguration("vault"))?;
                vault
                    .get(self.ctx.tenant(), integration)
                    .await?
                    .ok_or_else(|| {
                        tenant_tools::Error::SecretNotFound {
                            integration: integration.clone(),
                        }
                        .into()
                    })
            }
        }
    }

    /// Adds the checked tools to the registry (or re-arms the entries a
    /// previous registration of this alias left) and makes the
    /// registration live.
    fn commit(
        &self,
        registration: Arc<Registration>,
        tools: Vec<RemoteTool>,
    ) -> Result<Vec<ToolInfo>> {
        let inner = &self.remotes.inner;
        let tenant = self.ctx.tenant();
        let alias = registration.alias.clone();
        let mut state = inner.lock();
        if state
            .tenants
            .get(&tenant)
            .is_some_and(|m| m.contains_key(&alias))
        {
            return Err(Error::AliasTaken { alias });
        }
        let entries = match state.aliases.get_mut(&alias) {
            Some(a) if a.owner == tenant => &mut a.entries,
            _ => return Err(Error::AliasTaken { alias }),
        };
        let mut slots = Vec::with_capacity(tools.len());
        let mut infos = Vec::with_capacity(tools.len());
        for tool in &tools {
            if let Some(entry) = entries.get(&tool.name) {
                if entry.definition != tool.definition() {
                    return Err(Error::RemoteToolRefused {
                        tool: tool.remote_name.clone(),
                        reason: "it was imported before with another description, schema or \
                                 credential, and registered tools never change"
                            .into(),
                    });
                }
            }
        }
        for tool in tools {
            infos.push(ToolInfo {
                name: tool.name.clone(),
                description: tool.description.clone(),
                input_schema: tool.schema.clone(),
            });
            if let Some(entry) = entries.get(&tool.name) {
                slots.push(entry.slot.clone());
                continue;
            }
            let slot = tool.slot.clone();
            let definition = tool.definition();
            let name = tool.name.clone();
            inner.registry.register(tool)?;
            entries.insert(
                name,
                Entry {
                    slot: slot.clone(),
                    definition,
                },
            );
            slots.push(slot);
        }
        for slot in slots {
            slot.set(Some(registration.clone()));
        }
        state
            .tenants
            .entry(tenant)
            .or_default()
            .insert(alias, registration);
        Ok(infos)
    }

    /// Removes this tenant's server `alias`: its tools refuse every call
    /// from now on and no context lists it. The alias stays this tenant's
    /// (to register again).
    ///
    /// # Errors
    ///
    /// [`Error::DelegatedRegistration`], [`Error::ServerNotRegistered`]
    /// (also for another tenant's alias), [`Error::Context`].
    pub fn remove(&self, alias: &str) -> Result<()> {
        self.admit_root()?;
        let mut state = self.remotes.inner.lock();
        let removed = state
            .tenants
            .get_mut(&self.ctx.tenant())
            .and_then(|m| m.remove(alias));
        let Some(registration) = removed else {
            let e = Error::ServerNotRegistered {
                alias: alias.chars().take(64).collect(),
            };
            self.ctx.audit_denied("mcp.remove", alias, &e);
            return Err(e);
        };
        if let Some(a) = state.aliases.get(&registration.alias) {
            for (name, _) in &registration.tools {
                if let Some(entry) = a.entries.get(name) {
                    entry.slot.set(None);
                }
            }
        }
        self.ctx.audit_allowed("mcp.remove", alias);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_short_lower_case_names() {
        for ok in ["crm", "github-2", "a"] {
            validate_alias(ok).unwrap();
        }
        for bad in ["", "CRM", "a_b", "a.b", "a__b", "a b", &"a".repeat(33)] {
            assert!(matches!(
                validate_alias(bad),
                Err(Error::InvalidAlias { .. })
            ));
        }
        assert_eq!(local_name("crm", "search"), "mcp__crm__search");
    }
}

//! [`ToolRegistry`]: the platform's tools, shared by every tenant.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use tenant_core::PlatformAuthority;

use crate::error::{Error, Result};
use crate::schema::InputSchema;
use crate::tool::{validate_name, Tool, ToolInfo};

pub(crate) struct Registered {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) info: ToolInfo,
    pub(crate) schema: InputSchema,
    pub(crate) integrations: Arc<[String]>,
}

/// Every tool the platform offers, and the platform authority whose
/// contexts may use them. Platform-wide and tenant-agnostic: what a tenant
/// may use is decided by its [`ToolPolicy`](crate::ToolPolicy) and its
/// context's capabilities; executors built from this registry admit only
/// contexts issued under its authority. Cheap to clone.
#[derive(Clone)]
pub struct ToolRegistry {
    authority: PlatformAuthority,
    tools: Arc<RwLock<BTreeMap<String, Arc<Registered>>>>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .tools
            .read()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("ToolRegistry")
            .field("authority", &self.authority)
            .field("tools", &names)
            .finish()
    }
}

impl ToolRegistry {
    /// An empty registry serving contexts issued under `authority`
    /// (`issuer.authority()`).
    pub fn new(authority: &PlatformAuthority) -> Self {
        Self {
            authority: authority.clone(),
            tools: Arc::default(),
        }
    }

    /// The authority whose contexts this registry's executors admit.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.authority
    }

    /// Registers a tool. Its name and integration names must be valid and
    /// its schema enforceable ([`Error::InvalidSchema`]); names are unique.
    pub fn register(&self, tool: impl Tool) -> Result<()> {
        let name = tool.name().to_owned();
        validate_name("tool name", &name)?;
        let integrations = tool.integrations();
        for i in &integrations {
            validate_name("integration", i)?;
        }
        let schema =
            InputSchema::new(tool.input_schema()).map_err(|reason| Error::InvalidSchema {
                tool: name.clone(),
                reason,
            })?;
        let info = ToolInfo {
            name: name.clone(),
            description: tool.description().to_owned(),
            input_schema: schema.as_json().clone(),
        };
        let mut tools = self.tools.write().unwrap_or_else(|e| e.into_inner());
        if tools.contains_key(&name) {
            return Err(Error::DuplicateTool(name));
        }
        tools.insert(
            name,
            Arc::new(Registered {
                tool: Arc::new(tool),
                info,
                schema,
                integrations: integrations.into(),
            }),
        );
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Registered>> {
        let tools = self.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.get(name).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Registered>> {
        let tools = self.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.values().cloned().collect()
    }
}

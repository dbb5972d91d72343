//! # tenant-mcp
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod error;
mod resource;
mod server;
mod token;

pub use client::{
    McpClient, McpClientBuilder, McpRemotes, McpRemotesBuilder, RemoteAuth, RemoteServer,
    RemoteServerInfo, DEFAULT_REMOTE_TIMEOUT, MAX_ALIAS_LEN, MAX_IMPORTED_TOOLS,
    MAX_REMOTE_DESCRIPTION, MAX_REMOTE_SCHEMA_BYTES, MAX_REMOTE_SCHEMA_DEPTH,
    MAX_REMOTE_SCHEMA_NODES,
};
pub use error::{Error, Result};
pub use resource::{ResourceUrl, METADATA_WELL_KNOWN};
pub use server::{
    McpServer, McpServerBuilder, DEFAULT_MAX_REQUEST_BODY, DEFAULT_SESSIONS_PER_TENANT,
};
pub use token::{TokenMinter, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};

//! Egress: the network a tenant's tools may reach.
//!
//! One [`EgressPolicy`] per tenant, enforced two ways with the same
//! checks:
//! - [`EgressClient`] — HTTP for in-process tools;
//! - [`EgressProxy`] — the only exit of a sandboxed run's network
//!   namespace, which also brokers credentials: the run's process never
//!   holds them.
//!
//! Checks, all before any byte leaves the host:
//! 1. the destination (scheme `http`/`https`, no userinfo, `host:port` on
//!    the allowlist; an IP-literal host checked against the internal
//!    ranges right away);
//! 2. every address the name resolves to: the IANA special-purpose ranges
//!    that are not globally reachable, cloud metadata addresses and every
//!    IPv6 form embedding an internal IPv4 address are refused unless the
//!    entry for that very `host:port` was added with
//!    [`EgressPolicy::allow_internal`]; the connection goes to exactly the
//!    checked addresses;
//! 3. every redirect, again through 1 and 2.
//!
//! Proxies from the environment are ignored (a relay would hide the real
//! destination).

mod address;
mod broker;
mod client;
mod policy;
mod proxy;
mod resolve;
mod trust;

pub use address::is_internal_address;
pub use client::{EgressClient, EgressResponse, DEFAULT_MAX_BODY, MAX_REDIRECTS};
pub use policy::{CredentialInjection, EgressPolicy};
pub use proxy::{EgressProxy, ProxyGuard};

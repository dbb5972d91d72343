//! Usage events: what a call used, for metering and billing.

use std::time::SystemTime;

use tenant_core::{AgentId, PrincipalId, TenantId};

/// One model call's usage, as metered by [`ModelGate::record_usage`].
///
/// [`ModelGate::record_usage`]: crate::ModelGate::record_usage
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageEvent {
    /// The tenant (from the verified context).
    pub tenant: TenantId,
    /// The principal the agents act for.
    pub principal: PrincipalId,
    /// Agent lineage, root agent first, the calling agent last.
    pub lineage: Vec<AgentId>,
    /// The model.
    pub model: String,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Burndown multiplier of input tokens.
    pub input_multiplier: u32,
    /// Burndown multiplier of output tokens.
    pub output_multiplier: u32,
    /// Weighted tokens charged.
    pub weighted_tokens: u64,
    /// Cost in micro-units.
    pub cost_micros: u64,
    /// When it was recorded.
    pub at: SystemTime,
}

/// Where usage events go besides `tracing` (a billing pipeline, a queue, a
/// table). Called synchronously on the request path: implementations should
/// hand the event off (e.g. to a channel) rather than do I/O inline.
pub trait UsageSink: Send + Sync + 'static {
    /// Receives one event.
    fn record(&self, event: &UsageEvent);
}

/// A sink that forwards events into a Tokio channel.
impl UsageSink for tokio::sync::mpsc::UnboundedSender<UsageEvent> {
    fn record(&self, event: &UsageEvent) {
        if self.send(event.clone()).is_err() {
            tracing::warn!("usage sink channel closed; event dropped");
        }
    }
}

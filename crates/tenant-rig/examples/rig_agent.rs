//! A rig agent that only ever sees one tenant.
//!
//! Two tenants share one embedded qdrant-edge collection (temp dir) and
//! one tool registry. Each gets a rig agent built from a `TenantIndex`
//! (also exposed to the model as rig's `search_vector_store` tool) and
//! `TenantTools`. The model is rig's scripted `MockCompletionModel` — no
//! network, deterministic — and it tries to widen its search to the other
//! tenant and to call a tool outside its allowlist.
//!
//! Run: `cargo run -p tenant-rig --example rig_agent`

use std::sync::{Arc, Mutex};

use rig_agent::agent::{AgentHook, HookContext, OutcomeAction, OutcomeEvent};
use rig_agent::completion::PromptError;
use rig_agent::AgentBuilder;
use rig_core::effect::EffectKind;
use rig_core::test_utils::{MockCompletionModel, MockTurn};
use serde_json::json;
use tenant_core::*;
use tenant_retrieval::*;
use tenant_rig::{TenantIndex, TenantTools};
use tenant_tools::{FnTool, MemoryVault, ToolExecutor, ToolPolicies, ToolPolicy, ToolRegistry};

const DIMS: usize = 64;

type Outcome<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Prints every tool call the agent loop makes and what came back.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<String>>>);

impl AgentHook for Transcript {
    async fn on_outcome(&self, _ctx: &HookContext, event: OutcomeEvent<'_>) -> OutcomeAction {
        if let (EffectKind::ToolCall { name, args }, Some(result)) =
            (event.kind, event.tool_result())
        {
            let verdict = match result.error() {
                Some(e) => format!("BLOCKED ({:?}): {}", e.kind(), e.message()),
                None => format!("ok: {}", shorten(&result.output().render())),
            };
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("  {name}({args})\n    -> {verdict}"));
        }
        OutcomeAction::proceed()
    }
}

fn shorten(s: &str) -> String {
    if s.len() > 160 {
        format!("{}...", &s[..s.floor_char_boundary(160)])
    } else {
        s.to_owned()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Outcome<()> {
    // Platform start-up, once.
    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
    let dir = tempfile::tempdir()?;
    let retrieval = Retrieval::builder(EdgeBackend::open(dir.path())?)
        .authority(issuer.authority())
        .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new(
            "data-1",
        )?)))
        .collection(CollectionSpec::new("docs", DIMS)?)
        .tiers(StaticTiers::new(IsolationTier::Pool))
        .build()
        .await?;
    let registry = ToolRegistry::new(&issuer.authority());
    registry.register(FnTool::new(
        "add",
        "Adds two integers",
        json!({"type": "object",
               "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
               "required": ["a", "b"], "additionalProperties": false}),
        |_call, input| async move {
            Ok(json!(
                input["a"].as_i64().unwrap_or(0) + input["b"].as_i64().unwrap_or(0)
            ))
        },
    ))?;
    registry.register(FnTool::new(
        "shell",
        "Runs a shell command",
        json!({"type": "object", "properties": {"cmd": {"type": "string"}}}),
        |_call, _input| async move { Ok(json!("(would run)")) },
    ))?;
    let policies = ToolPolicies::new();
    let vault = Arc::new(MemoryVault::new());
    let embed = HashEmbedder::new(DIMS);

    let acme = TenantId::random();
    let globex = TenantId::random();
    policies.set(acme, ToolPolicy::deny_all().allow_tools(["add"]));
    policies.set(globex, ToolPolicy::deny_all().allow_tools(["add", "shell"]));

    for (tenant, name) in [(acme, "acme"), (globex, "globex")] {
        let ctx = context(&issuer, tenant)?;
        let client = RetrievalClient::builder()
            .backend(&retrieval)
            .collection("docs")
            .tenant(&ctx)
            .build()?;
        client
            .upsert([
                Document::new(
                    format!("{name}-plan"),
                    embed.embed_one("rust agents roadmap"),
                    format!("{name} confidential: rust agents roadmap"),
                )
                .with_metadata("lang", "en"),
                Document::new(
                    format!("{name}-notes"),
                    embed.embed_one("notes on vector search for agents"),
                    format!("{name} confidential: notes on vector search for agents"),
                )
                .with_metadata("lang", "en"),
            ])
            .await?;
    }

    for (tenant, other, name) in [(acme, globex, "acme"), (globex, acme, "globex")] {
        // Per request: a verified context, scoped handles, rig adapters.
        let ctx = context(&issuer, tenant)?;
        let client = RetrievalClient::builder()
            .backend(&retrieval)
            .collection("docs")
            .tenant(&ctx)
            .build()?;
        let index = TenantIndex::new(client, embed);
        let tools = TenantTools::new(
            ToolExecutor::builder()
                .registry(&registry)
                .vault(&vault)
                .policies(&policies)
                .tenant(&ctx)
                .build()?,
        );
        let offered: Vec<String> = tools
            .rig_tools()?
            .iter()
            .map(|t| t.name().to_string())
            .collect();

        let transcript = Transcript::default();
        let agent = AgentBuilder::new(scripted_model(other))
            .preamble("Answer from the tenant's documents.")
            .dynamic_context(2, index.clone())
            .add_hook(transcript.clone())
            .tool(index)
            .dynamic_tools(tools.rig_tools()?)
            .build();
        let run = agent
            .prompt("What is our rust agents plan?")
            .max_turns(8)
            .run()
            .await;

        println!(
            "== tenant {name}: tools offered to the model: search_vector_store, {}",
            offered.join(", ")
        );
        for line in transcript
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            println!("{line}");
        }
        match run {
            Ok(answer) => println!("  final answer: {:?}\n", answer.output()),
            // A tool that was never offered stops rig's run: the executor
            // is never reached.
            Err(PromptError::UnknownToolCall {
                tool_name,
                available_tools,
                ..
            }) => println!(
                "  {tool_name}(..)\n    -> BLOCKED: rig stopped the run, `{tool_name}` was never \
                 offered (available: {available_tools:?})\n"
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn context(issuer: &ContextIssuer, tenant: TenantId) -> Outcome<TenantContext> {
    Ok(issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("support-bot")?)
        .capabilities(
            Capabilities::none()
                .with_collections(["docs"])?
                .with_tools(["add", "shell"])?,
        )
        .issue()?)
}

/// What a model might ask for: a search widened to another tenant, a
/// search matching everything, an allowed tool, a forbidden one.
fn scripted_model(other: TenantId) -> MockCompletionModel {
    MockCompletionModel::from_turns([
        MockTurn::tool_call(
            "c1",
            "search_vector_store",
            json!({"query": "rust agents plan", "samples": 5,
                   "filter": {"or": [{"eq": ["tenant_id", other.to_string()]},
                                     {"eq": ["lang", "en"]}]}}),
        ),
        MockTurn::tool_call(
            "c2",
            "search_vector_store",
            json!({"query": "rust agents plan", "samples": 5,
                   "filter": {"or": [{"eq": ["lang", "en"]}, {"eq": ["lang", "de"]}]}}),
        ),
        MockTurn::tool_call("c3", "add", json!({"a": 40, "b": 2})),
        MockTurn::tool_call("c4", "shell", json!({"cmd": "cat /etc/passwd"})),
        MockTurn::text("Here is the plan, from our own documents only."),
    ])
}

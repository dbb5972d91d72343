//! A real rig agent loop (rig-agent 0.44) over a scripted, deterministic
//! model (rig's own `MockCompletionModel`; no network): the model asks for
//! a widening search, a narrowing search, an allowed tool and a forbidden
//! tool. Only the tenant's data and allowed tools are reachable.

mod platform;

use std::sync::{Arc, Mutex};

use platform::{Platform, A_SECRET, B_SECRET};
use rig_agent::agent::PromptResponse;
use rig_agent::agent::{AgentHook, HookContext, OutcomeAction, OutcomeEvent};
use rig_agent::completion::PromptError;
use rig_agent::AgentBuilder;
use rig_core::effect::EffectKind;
use rig_core::test_utils::{MockCompletionModel, MockTurn};
use rig_core::tool::ToolExecutionError;
use serde_json::json;
use tenant_core::TenantId;

/// What each tool call came back with, as the agent loop saw it.
#[derive(Clone, Default)]
struct ToolLog(Arc<Mutex<Vec<Call>>>);

#[derive(Clone, Debug)]
struct Call {
    tool: String,
    output: String,
    error: Option<ToolExecutionError>,
}

impl AgentHook for ToolLog {
    async fn on_outcome(&self, _ctx: &HookContext, event: OutcomeEvent<'_>) -> OutcomeAction {
        if let (EffectKind::ToolCall { name, .. }, Some(result)) = (event.kind, event.tool_result())
        {
            self.0.lock().unwrap().push(Call {
                tool: name.clone(),
                output: result.output().render(),
                error: result.error().cloned(),
            });
        }
        OutcomeAction::proceed()
    }
}

fn script(other: TenantId) -> MockCompletionModel {
    MockCompletionModel::from_turns([
        // The model tries to widen the search to the other tenant.
        MockTurn::tool_call(
            "c1",
            "search_vector_store",
            json!({"query": "rust agents", "samples": 10,
                   "filter": {"or": [{"eq": ["tenant_id", other.to_string()]},
                                     {"eq": ["lang", "en"]}]}}),
        ),
        // A filter that matches every document of both tenants.
        MockTurn::tool_call(
            "c2",
            "search_vector_store",
            json!({"query": "rust agents", "samples": 10,
                   "filter": {"or": [{"eq": ["lang", "en"]}, {"gt": ["year", 0]}]}}),
        ),
        MockTurn::tool_call("c3", "add", json!({"a": 2, "b": 3})),
        MockTurn::tool_call("c4", "shell", json!({"cmd": "cat /etc/passwd"})),
        MockTurn::text("done"),
    ])
}

struct Run {
    result: Result<PromptResponse, PromptError>,
    calls: Vec<Call>,
    /// Everything the model was sent (prompts, dynamic context, tool
    /// definitions and results), rendered.
    seen_by_model: String,
    model_calls: usize,
}

async fn run_agent(p: &Platform, tenant: TenantId, other: TenantId) -> Run {
    let model = script(other);
    let log = ToolLog::default();
    let index = p.index(tenant);
    let tools = p.tools(tenant);
    let agent = AgentBuilder::new(model.clone())
        .preamble("You answer from the tenant's documents.")
        .dynamic_context(2, index.clone())
        .add_hook(log.clone())
        .tool(index)
        .dynamic_tools(tools.rig_tools().unwrap())
        .build();
    let result = agent
        .prompt("Summarise our rust agent documents")
        .max_turns(8)
        .run()
        .await;
    let calls = log.0.lock().unwrap().clone();
    Run {
        result,
        calls,
        seen_by_model: format!("{:?}", model.requests()),
        model_calls: model.request_count(),
    }
}

#[tokio::test]
async fn a_rig_agent_for_tenant_a_reaches_only_tenant_as_data_and_allowed_tools() {
    let p = Platform::start().await;
    let run = run_agent(&p, p.a, p.b).await;
    let calls = &run.calls;

    let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["search_vector_store", "search_vector_store", "add"]);

    // 1. The widening filter was refused with the typed error, which
    //    survives rig's agent loop as the tool error's source.
    let refused = calls[0].error.as_ref().expect("widening search must fail");
    let vs = refused
        .downcast_ref::<rig_core::vector_store::VectorStoreError>()
        .expect("the index's error survives the agent loop");
    assert!(matches!(
        tenant_rig::Error::from_vector_store(vs),
        Some(tenant_rig::Error::TenantFieldInFilter(_))
    ));
    // 2. The match-everything filter returned tenant A's documents only.
    assert!(calls[1].error.is_none());
    assert!(calls[1].output.contains(A_SECRET));
    assert_eq!(
        calls[1].output.matches("\"text\"").count(),
        3,
        "{}",
        calls[1].output
    );
    // 3. The allowed tool ran through the executor.
    assert_eq!(calls[2].output, "5");
    // 4. `shell` is not on A's allowlist, so it was never registered with
    //    the agent: rig stops the run, naming the only tools A has, and
    //    the tool never ran.
    match &run.result {
        Err(PromptError::UnknownToolCall {
            tool_name,
            available_tools,
            ..
        }) => {
            assert_eq!(tool_name, "shell");
            let mut available = available_tools.clone();
            available.sort();
            assert_eq!(available, ["add", "search_vector_store"]);
        }
        other => panic!("expected UnknownToolCall, got {other:?}"),
    }
    assert_eq!(p.shell_runs(), 0);
    assert_eq!(run.model_calls, 4);

    // Nothing of tenant B anywhere: not in the dynamic context sent to the
    // model, not in any tool result, not in the run's history.
    assert!(run.seen_by_model.contains(A_SECRET));
    assert!(!run.seen_by_model.contains(B_SECRET));
    assert!(!format!("{:?}", run.result).contains(B_SECRET));
    assert!(calls.iter().all(|c| !c.output.contains(B_SECRET)));
    // The model was never told about the shell tool.
    assert!(!run.seen_by_model.contains("Runs a shell command"));
}

#[tokio::test]
async fn the_same_agent_script_for_tenant_b_sees_only_tenant_b() {
    let p = Platform::start().await;
    let run = run_agent(&p, p.b, p.a).await;
    let response = run.result.expect("B's run completes");
    assert_eq!(response.output(), "done");
    assert_eq!(run.model_calls, 5);
    let calls = &run.calls;
    assert_eq!(calls.len(), 4);
    assert!(calls[0].error.is_some());
    assert!(calls[1].output.contains(B_SECRET));
    // Shell is on B's allowlist, so B's agent may run it.
    assert!(calls[3].error.is_none(), "{:?}", calls[3]);
    assert_eq!(p.shell_runs(), 1);
    assert!(run.seen_by_model.contains(B_SECRET));
    assert!(!run.seen_by_model.contains(A_SECRET));
    assert!(!format!("{response:?}").contains(A_SECRET));
    assert!(calls.iter().all(|c| !c.output.contains(A_SECRET)));
}

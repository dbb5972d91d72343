//! [`CommandTool`]: a tool that runs a fixed program in the sandbox.

use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::sandbox::SandboxCommand;
use crate::tool::{Tool, ToolCall};

/// Runs a fixed program in the executor's [`Sandbox`](crate::Sandbox), in
/// the run's workspace, through [`ToolCall::run_sandboxed`] (egress routed
/// through the tenant's proxy when its policy allows any). The model
/// supplies only the arguments (input `{"args": [..]}`); the program,
/// environment and timeout are fixed by the platform. Output:
/// `{"exit_code", "stdout", "stderr", "timed_out"}`.
#[derive(Clone, Debug)]
pub struct CommandTool {
    name: String,
    description: String,
    program: String,
    fixed_args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
    integrations: Vec<String>,
}

impl CommandTool {
    /// A tool `name` that runs `program` (absolute path) with `fixed_args`
    /// followed by the caller's arguments.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        program: impl Into<String>,
        fixed_args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            program: program.into(),
            fixed_args: fixed_args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            timeout: None,
            integrations: Vec::new(),
        }
    }

    /// Declares an environment variable of the sandboxed process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Declares the vault integrations whose credentials the egress proxy
    /// may inject for this tool's runs (never into the process).
    pub fn with_integrations<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.integrations = names.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the wall-clock timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

#[async_trait::async_trait]
impl Tool for CommandTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "args": {"type": "array", "items": {"type": "string", "maxLength": 4096}, "maxItems": 64}
            },
            "additionalProperties": false
        })
    }

    fn integrations(&self) -> Vec<String> {
        self.integrations.clone()
    }

    async fn call(&self, call: ToolCall, input: Value) -> Result<Value> {
        let mut cmd = SandboxCommand::new(&self.program).args(self.fixed_args.iter().cloned());
        if let Some(args) = input.get("args").and_then(Value::as_array) {
            cmd = cmd.args(args.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        for (k, v) in &self.env {
            cmd = cmd.env(k, v);
        }
        if let Some(t) = self.timeout {
            cmd = cmd.timeout(t);
        }
        let out = call.run_sandboxed(cmd).await?;
        let exit_code = match out.status {
            crate::sandbox::WaitStatus::Exited(c) => json!(c),
            crate::sandbox::WaitStatus::Signaled(_) => Value::Null,
        };
        if out.stdout.len() > usize::MAX / 2 {
            return Err(Error::ToolFailed {
                tool: self.name.clone(),
                message: "output too large".into(),
            });
        }
        Ok(json!({
            "exit_code": exit_code,
            "stdout": out.stdout_text(),
            "stderr": out.stderr_text(),
            "timed_out": out.timed_out,
        }))
    }
}

//! REAPI `Execution`: `Execute` an Action whose blobs are in the CAS and
//! follow the operation stream until it is done (`WaitExecution` when the
//! stream ends early, as servers may end it on keepalive).

use std::time::Duration;

use futures_util::StreamExt as _;

use crate::bazel_google::longrunning::operations_client::OperationsClient;
use crate::bazel_google::longrunning::{operation, CancelOperationRequest, Operation};
use crate::proto::execution_client::ExecutionClient;
use crate::proto::{self, ExecuteRequest, ExecuteResponse, WaitExecutionRequest};
use crate::{digest_string, Client, Digest, Error, Result};

/// How often an UNAVAILABLE server is retried before the call fails.
const RETRIES: u32 = 5;

impl Client {
    /// Runs `action` remotely and returns the server's ExecuteResponse once
    /// the operation is done. A server that answers UNAVAILABLE (restarting,
    /// overloaded) is retried with a growing pause, continuing the same
    /// operation when its name is known.
    pub async fn execute(&self, action: &Digest, skip_cache_lookup: bool) -> Result<ExecuteResponse> {
        let mut name: Option<String> = None;
        let mut attempt = 0;
        loop {
            let r = match &name {
                None => self.execute_once(action, skip_cache_lookup, &mut name).await,
                Some(n) => self.wait_once(n.clone(), &mut name).await,
            };
            match r {
                Ok(Some(resp)) => return Ok(resp),
                // The stream ended before the operation was done: wait on it.
                Ok(None) => {}
                Err(Error::Unreachable { .. }) if attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
                // The server forgot the operation (it restarted): start again.
                Err(Error::Rpc {
                    code: tonic::Code::NotFound,
                    ..
                }) if name.is_some() && attempt < RETRIES => {
                    attempt += 1;
                    name = None;
                }
                Err(e) => {
                    return Err(match e {
                        Error::Unreachable { url, reason } => Error::Unreachable {
                            url,
                            reason: format!(
                                "executing action {}: {reason} (gave up after {RETRIES} retries)",
                                digest_string(action)
                            ),
                        },
                        e => e,
                    })
                }
            }
        }
    }

    /// Starts executing `action` and returns the operation's name without
    /// waiting for it to finish (for `cancel_operation`, or to follow later).
    pub async fn execute_start(&self, action: &Digest) -> Result<String> {
        let mut exec = ExecutionClient::new(self.channel());
        let mut stream = exec
            .execute(self.req(ExecuteRequest {
                instance_name: self.instance().to_string(),
                action_digest: Some(action.clone()),
                digest_function: proto::digest_function::Value::Sha256 as i32,
                ..Default::default()
            }))
            .await
            .map_err(|s| self.status("Execute", s))?
            .into_inner();
        while let Some(op) = stream.next().await {
            let op = op.map_err(|s| self.status("Execute", s))?;
            if !op.name.is_empty() {
                return Ok(op.name);
            }
        }
        Err(Error::Invalid(format!(
            "remote executor at {}: the Execute stream of action {} ended without naming its operation",
            self.url(),
            digest_string(action)
        )))
    }

    /// `Operations.CancelOperation`: the server stops the operation (and
    /// cancels the lease of the worker running it).
    pub async fn cancel_operation(&self, name: &str) -> Result<()> {
        let mut ops = OperationsClient::new(self.channel());
        ops.cancel_operation(self.req(CancelOperationRequest { name: name.to_string() }))
            .await
            .map_err(|s| self.status("CancelOperation", s))?;
        Ok(())
    }

    async fn execute_once(
        &self,
        action: &Digest,
        skip_cache_lookup: bool,
        name: &mut Option<String>,
    ) -> Result<Option<ExecuteResponse>> {
        let mut exec = ExecutionClient::new(self.channel());
        let stream = exec
            .execute(self.req(ExecuteRequest {
                instance_name: self.instance().to_string(),
                skip_cache_lookup,
                action_digest: Some(action.clone()),
                execution_policy: None,
                results_cache_policy: None,
                digest_function: proto::digest_function::Value::Sha256 as i32,
                ..Default::default()
            }))
            .await
            .map_err(|s| self.status("Execute", s))?;
        self.follow(stream.into_inner(), "Execute", name).await
    }

    async fn wait_once(&self, op: String, name: &mut Option<String>) -> Result<Option<ExecuteResponse>> {
        let mut exec = ExecutionClient::new(self.channel());
        let stream = exec
            .wait_execution(self.req(WaitExecutionRequest { name: op }))
            .await
            .map_err(|s| self.status("WaitExecution", s))?;
        self.follow(stream.into_inner(), "WaitExecution", name).await
    }

    /// Reads operations until one is done; None when the stream ends first.
    async fn follow(
        &self,
        mut stream: tonic::codec::Streaming<Operation>,
        what: &str,
        name: &mut Option<String>,
    ) -> Result<Option<ExecuteResponse>> {
        while let Some(op) = stream.next().await {
            let op = op.map_err(|s| self.status(what, s))?;
            if !op.name.is_empty() {
                *name = Some(op.name.clone());
            }
            if !op.done {
                continue;
            }
            return match op.result {
                Some(operation::Result::Response(any)) => Ok(Some(crate::decode(&any.value, "the ExecuteResponse")?)),
                Some(operation::Result::Error(s)) => Err(Error::Rpc {
                    url: self.url().to_string(),
                    what: what.to_string(),
                    code: tonic::Code::from_i32(s.code),
                    message: s.message,
                }),
                None => Err(Error::Invalid(format!(
                    "remote executor at {}: operation {} is done without a response",
                    self.url(),
                    op.name
                ))),
            };
        }
        Ok(None)
    }
}

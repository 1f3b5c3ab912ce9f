//! The Remote Workers API's Bots service (`google.devtools.remoteworkers.
//! v1test2`, googleapis' google/devtools/remoteworkers/v1test2/bots.proto
//! and worker.proto), which BuildGrid's workers poll for leases. The
//! `bazel-remote-apis` crate does not carry these protos, so the messages
//! farm uses are declared here with prost's derive, field numbers as in
//! the published protos (fields farm never sets are left out: protobuf
//! skips unknown fields).

use crate::{Error, Result};

/// `google.protobuf.Any`, `google.rpc.Status`, `google.protobuf.Timestamp`
/// as `bazel-remote-apis` generates them.
pub use bazel_remote_apis::google::protobuf::{Any, Timestamp};
pub use bazel_remote_apis::google::rpc::Status;

/// `BotSession`: one bot's connection to the scheduler and its leases.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BotSession {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub bot_id: String,
    #[prost(enumeration = "BotStatus", tag = "3")]
    pub status: i32,
    #[prost(message, optional, tag = "4")]
    pub worker: Option<Worker>,
    #[prost(message, repeated, tag = "5")]
    pub leases: Vec<Lease>,
    #[prost(message, optional, tag = "6")]
    pub expire_time: Option<Timestamp>,
    #[prost(string, tag = "7")]
    pub version: String,
}

/// `BotStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BotStatus {
    Unspecified = 0,
    Ok = 1,
    Unhealthy = 2,
    HostRebooting = 3,
    BotTerminating = 4,
}

/// `LeaseState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LeaseState {
    Unspecified = 0,
    Pending = 1,
    Active = 2,
    Completed = 4,
    Cancelled = 5,
}

/// `Lease`: one unit of work; BuildGrid's payload is the `Action` (or its
/// `Digest`), the result an `ActionResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(string, tag = "7")]
    pub id: String,
    #[prost(message, optional, tag = "8")]
    pub payload: Option<Any>,
    #[prost(message, optional, tag = "9")]
    pub result: Option<Any>,
    #[prost(enumeration = "LeaseState", tag = "2")]
    pub state: i32,
    #[prost(message, optional, tag = "3")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "5")]
    pub expire_time: Option<Timestamp>,
}

/// `Worker`: the devices of a bot; the first one's properties are what
/// the scheduler matches an Action's platform against.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Worker {
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Device`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    #[prost(string, tag = "1")]
    pub handle: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// `Worker.Property` and `Device.Property` (same shape).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `CreateBotSessionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub parent: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

/// `UpdateBotSessionRequest` (without `update_mask`: the whole session is sent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateBotSessionRequest {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub bot_session: Option<BotSession>,
}

/// The `type_url` of a packed message of `full_name`.
pub fn type_url(full_name: &str) -> String {
    format!("type.googleapis.com/{full_name}")
}

pub const ACTION_TYPE: &str = "build.bazel.remote.execution.v2.Action";
pub const DIGEST_TYPE: &str = "build.bazel.remote.execution.v2.Digest";
pub const ACTION_RESULT_TYPE: &str = "build.bazel.remote.execution.v2.ActionResult";

/// A Bots service client on one channel.
#[derive(Clone)]
pub struct BotsClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
    client: crate::Client,
}

impl BotsClient {
    pub fn new(client: &crate::Client) -> BotsClient {
        BotsClient {
            grpc: tonic::client::Grpc::new(client.channel()),
            client: client.clone(),
        }
    }

    async fn call<Req, Resp>(&mut self, method: &'static str, msg: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.grpc.ready().await.map_err(|e| Error::Unreachable {
            url: self.client.url().to_string(),
            reason: format!("{method}: {e}"),
        })?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let req = self.client.req(msg);
        let what = method.rsplit('/').next().unwrap_or(method);
        let r = self
            .grpc
            .unary(req, path, codec)
            .await
            .map_err(|s| self.client.status(what, s))?;
        Ok(r.into_inner())
    }

    /// `CreateBotSession` under `parent` (the instance name).
    pub async fn create(&mut self, parent: &str, session: BotSession) -> Result<BotSession> {
        self.call(
            "/google.devtools.remoteworkers.v1test2.Bots/CreateBotSession",
            CreateBotSessionRequest {
                parent: parent.to_string(),
                bot_session: Some(session),
            },
        )
        .await
    }

    /// `UpdateBotSession`: reports the leases' states, gets new ones.
    pub async fn update(&mut self, session: BotSession) -> Result<BotSession> {
        self.call(
            "/google.devtools.remoteworkers.v1test2.Bots/UpdateBotSession",
            UpdateBotSessionRequest {
                name: session.name.clone(),
                bot_session: Some(session),
            },
        )
        .await
    }
}

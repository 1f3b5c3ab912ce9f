//! farm-remote's Execution client and hand-declared Bots messages against
//! a real BuildGrid with its `!execution` service on PostgreSQL: an Action
//! sent with `Execute` reaches a bot as a lease whose payload is that
//! Action, the ActionResult the bot completes the lease with comes back on
//! the operation stream, and a bot whose platform does not match is never
//! given the lease.

use std::time::{Duration, Instant};

use farm_remote::bots::{self, Any, BotSession, BotStatus, BotsClient, Device, LeaseState, Property, Worker};
use farm_remote::proto::{self, platform, Action, ActionResult, Command, Directory, Platform};
use farm_remote::{decode, digest_of, encode, BlobData, Client, RemoteConfig};
use farm_testkit::buildgrid_exec::{pg_bin, BuildGridExec};
use farm_testkit::{require, require_tool};
use prost::Message as _;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn session(bot_id: &str, sandbox: &str) -> BotSession {
    let prop = |k: &str, v: &str| Property {
        key: k.into(),
        value: v.into(),
    };
    BotSession {
        bot_id: bot_id.into(),
        status: BotStatus::Ok as i32,
        worker: Some(Worker {
            devices: vec![Device {
                handle: bot_id.into(),
                properties: vec![
                    prop("OSFamily", "linux"),
                    prop("ISA", "x86-64"),
                    prop("farm-sandbox", sandbox),
                ],
            }],
            properties: vec![],
        }),
        ..Default::default()
    }
}

/// Execute → lease → ActionResult → ExecuteResponse through BuildGrid;
/// the non-matching bot (farm-sandbox "hermetic") gets no lease.
#[test]
fn execute_reaches_a_matching_bot_and_returns_its_result() {
    if !require_tool("bgd") || !require(pg_bin().is_some(), "PostgreSQL's initdb under /usr/lib/postgresql") {
        return;
    }
    let server = BuildGridExec::start();
    let rt = rt();
    let config = RemoteConfig {
        url: server.url.clone(),
        ..Default::default()
    };
    let client = rt
        .block_on(Client::connect(
            &config,
            Duration::from_secs(5),
            Duration::from_secs(120),
        ))
        .unwrap();

    let platform = Platform {
        properties: [("ISA", "x86-64"), ("OSFamily", "linux"), ("farm-sandbox", "host")]
            .iter()
            .map(|(n, v)| platform::Property {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
    };
    let command = Command {
        arguments: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        output_paths: vec!["out".into()],
        ..Default::default()
    };
    let (cmd_d, cmd_b) = encode(&command);
    let (root_d, root_b) = encode(&Directory::default());
    let action = Action {
        command_digest: Some(cmd_d.clone()),
        input_root_digest: Some(root_d.clone()),
        platform: Some(platform),
        do_not_cache: true,
        ..Default::default()
    };
    let (action_d, action_b) = encode(&action);
    rt.block_on(client.upload(vec![
        (cmd_d, BlobData::Bytes(cmd_b)),
        (root_d, BlobData::Bytes(root_b)),
        (action_d.clone(), BlobData::Bytes(action_b)),
    ]))
    .unwrap();

    let exec_client = client.clone();
    let exec_digest = action_d.clone();
    let executing = rt.spawn(async move { exec_client.execute(&exec_digest, true).await });

    let stdout = b"hi\n".to_vec();
    let stdout_d = digest_of(&stdout);
    rt.block_on(client.upload(vec![(stdout_d.clone(), BlobData::Bytes(stdout))]))
        .unwrap();

    // BuildGrid holds UpdateBotSession until a lease or near the call's deadline.
    let bot_client = rt
        .block_on(Client::connect(&config, Duration::from_secs(5), Duration::from_secs(5)))
        .unwrap();
    let bot = BotsClient::new(&bot_client);
    let served = rt.block_on(async {
        let executing = &executing;
        let mut b = bot.clone();
        let mut other = bot.clone();
        let mut wrong = other.create("", session("wrong-bot", "hermetic")).await.unwrap();
        let mut s = b.create("", session("bot-1", "host")).await.unwrap();
        assert!(!s.name.is_empty(), "BuildGrid names the session");
        let deadline = Instant::now() + Duration::from_secs(60);
        // Wait for the lease (BuildGrid hands it out already ACTIVE; the
        // protocol also allows PENDING, which the bot must acknowledge).
        loop {
            assert!(Instant::now() < deadline, "no lease within 60 s:\n{}", server.log());
            assert!(!executing.is_finished(), "Execute ended early:\n{}", server.log());
            if let Some(l) = s
                .leases
                .iter_mut()
                .find(|l| l.state == LeaseState::Pending as i32 || l.state == LeaseState::Active as i32)
            {
                let payload = l.payload.clone().expect("a lease carries its Action");
                assert_eq!(payload.type_url, bots::type_url(bots::ACTION_TYPE));
                let got: Action = decode(&payload.value, "the lease's Action").unwrap();
                assert_eq!(got, action);
                l.state = LeaseState::Active as i32;
                s = b.update(s).await.unwrap();
                break;
            }
            s = b.update(s).await.unwrap();
            wrong = other.update(wrong).await.unwrap();
        }
        wrong = other.update(wrong).await.unwrap();
        assert!(wrong.leases.is_empty(), "the hermetic bot was given a host action");
        // Complete it.
        let result = ActionResult {
            exit_code: 3,
            stdout_digest: Some(stdout_d.clone()),
            ..Default::default()
        };
        for l in s.leases.iter_mut() {
            l.state = LeaseState::Completed as i32;
            l.status = Some(bots::Status::default());
            l.result = Some(Any {
                type_url: bots::type_url(bots::ACTION_RESULT_TYPE),
                value: result.encode_to_vec(),
            });
        }
        b.update(s).await.unwrap();
        result
    });

    let resp = rt.block_on(executing).unwrap().unwrap();
    let status = resp.status.clone().unwrap_or_default();
    assert_eq!(status.code, 0, "{status:?}");
    let got = resp.result.expect("the response carries the ActionResult");
    assert_eq!(got.exit_code, served.exit_code);
    assert_eq!(got.stdout_digest, served.stdout_digest);
    let _: Option<proto::ExecutedActionMetadata> = got.execution_metadata;
}

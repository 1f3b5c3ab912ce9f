//! `farm build`: arguments into `BuildOptions`, then the engine's build (or its watch loop).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use farm_engine::build::{build_project, BuildOptions, Target, Variation};
use farm_project::{Project, StatePaths};
use farm_store::Store;

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct BuildArgs {
    /// What to build [default: all]; `ai` is models and `docker` is images.
    #[arg(value_enum)]
    targets: Vec<TargetName>,
    /// What to build, as the FARM design spells it (repeatable; the same as naming targets).
    #[arg(long = "target", short = 't', value_enum, value_name = "TARGET")]
    target: Vec<TargetName>,
    /// Run every step in the sandbox with only the locked inputs, network off.
    #[arg(long)]
    hermetic: bool,
    /// Steps run at once [default: the number of CPUs].
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Ignore the action cache: run every step.
    #[arg(long)]
    no_cache: bool,
    /// Empty the action cache first (the store keeps what farm.lock pins), then build.
    #[arg(long)]
    clear_cache: bool,
    /// Run this step even if the action cache has it (repeatable), e.g. `--rerun images`.
    #[arg(long, value_name = "STEP")]
    rerun: Vec<String>,
    /// The output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write a bundle report (bundle-report.json and .html) of the frontend.
    #[arg(long)]
    analyze: bool,
    /// Fail when the frontend bundle (sourcemaps excluded) is larger than this (e.g. 500KiB).
    #[arg(long, value_name = "SIZE")]
    size_limit: Option<String>,
    /// Write a Chrome trace-event JSON of the steps (open it in Perfetto) to
    /// .farm/profile.json, or to FILE with `--profile=FILE`.
    #[arg(long, value_name = "FILE", num_args = 0..=1, require_equals = true)]
    profile: Option<Option<PathBuf>>,
    /// The build environment: a `[env.NAME]` of farm.toml.
    #[arg(long, value_name = "NAME", default_value = farm_project::config::DEFAULT_ENV)]
    env: String,
    /// A development build: sourcemaps on, no minification.
    #[arg(long)]
    dev: bool,
    /// Layer compression of the images [default: farm.toml's images.compression].
    #[arg(long, value_enum)]
    compression: Option<farm_project::config::Compression>,
    /// Rebuild whenever an input of the selected targets changes (Ctrl-C stops).
    #[arg(long)]
    watch: bool,
    /// Kill a step after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    step_timeout: u64,
    /// A build-time variable of the frontend, backend and custom steps
    /// (repeatable); without `=VALUE` it is taken from your environment.
    /// Part of the step keys.
    #[arg(long = "var", value_name = "NAME[=VALUE]")]
    vars: Vec<String>,
    /// A secret for the steps, as the file /run/secrets/NAME (repeatable):
    /// from $NAME, `NAME=env:VAR` or `NAME=file:PATH`. Never part of a key,
    /// an output, a log or the manifest.
    #[arg(long = "secret", value_name = "NAME[=env:VAR|file:PATH]")]
    secrets: Vec<String>,
    /// A Remote Execution API server's action cache beside the local one
    /// (grpc://HOST:PORT or grpcs://HOST:PORT) [default: farm.toml's [remote] cache].
    /// The bearer token is read from $FARM_REMOTE_TOKEN.
    #[arg(long, value_name = "URL", env = "FARM_REMOTE_CACHE")]
    remote_cache: Option<String>,
    /// Look results up in the remote cache but never write any.
    #[arg(long)]
    remote_cache_read_only: bool,
    /// Send hermetic steps to a Remote Execution API server's Execution
    /// service (grpc://HOST:PORT or grpcs://HOST:PORT), which is also the
    /// remote cache [default: farm.toml's [remote] executor]. Steps that see
    /// --secret files and non-hermetic steps run here.
    #[arg(long, value_name = "URL", env = "FARM_REMOTE_EXECUTOR")]
    remote_executor: Option<String>,
    /// The remote cache's REAPI instance name [default: farm.toml's [remote] instance, else ""].
    #[arg(long, value_name = "NAME")]
    remote_instance: Option<String>,
}

/// `--var NAME[=VALUE]`: the value, or the caller's `$NAME`.
fn parse_var(arg: &str) -> Result<(String, String)> {
    match arg.split_once('=') {
        Some((name, value)) => Ok((name.to_string(), value.to_string())),
        None => match std::env::var(arg) {
            Ok(v) => Ok((arg.to_string(), v)),
            Err(_) => anyhow::bail!(
                "--var {arg}: environment variable {arg} is not set\nhint: set it, or give the value: --var {arg}=VALUE"
            ),
        },
    }
}

/// `--secret NAME`, `NAME=env:VAR` or `NAME=file:PATH`: the name and value.
/// Messages never hold the value.
fn parse_secret(arg: &str) -> Result<farm_engine::build::Secret> {
    let (name, source) = match arg.split_once('=') {
        Some((name, source)) => (name, source.to_string()),
        None => (arg, format!("env:{arg}")),
    };
    let value = if let Some(var) = source.strip_prefix("env:") {
        match std::env::var_os(var) {
            Some(v) => std::os::unix::ffi::OsStringExt::into_vec(v),
            None => anyhow::bail!(
                "--secret {name}: environment variable {var} is not set\nhint: export {var}, or use --secret {name}=file:PATH"
            ),
        }
    } else if let Some(path) = source.strip_prefix("file:") {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("--secret {name}: reading {path}: {e}"))?
    } else {
        anyhow::bail!(
            "--secret {name}: expected NAME, NAME=env:VAR or NAME=file:PATH, found a source of another kind after `=`"
        );
    };
    Ok(farm_engine::build::Secret {
        name: name.to_string(),
        value,
    })
}

/// Entry point of `farm build`.
pub fn run(ctx: &Context, args: BuildArgs) -> Result<Exit> {
    let project = Project::load(&ctx.project_dir)?;
    let size_limit = args
        .size_limit
        .as_deref()
        .map(farm_formats::size::parse_size)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--size-limit: {e}"))?;
    let mut targets: Vec<Target> = args.targets.iter().chain(&args.target).map(|t| t.0).collect();
    if targets.is_empty() {
        targets.push(Target::All);
    }
    let profile = args
        .profile
        .map(|file| file.unwrap_or_else(|| StatePaths::new(&project.root).profile()));
    let opts = BuildOptions {
        targets,
        hermetic: args.hermetic,
        jobs: args.jobs,
        no_cache: args.no_cache,
        rerun: args.rerun.iter().map(|s| farm_engine::step::StepId::parse(s)).collect(),
        out: args
            .out
            .map(|o| {
                if o.is_absolute() {
                    Ok(o)
                } else {
                    std::env::current_dir().map(|d| d.join(o))
                }
            })
            .transpose()?,
        analyze: args.analyze,
        size_limit,
        profile,
        step_timeout: Duration::from_secs(args.step_timeout),
        variation: Variation::default(),
        env: args.env,
        dev: args.dev,
        compression: args.compression,
        skip_types_check: false,
        settings: farm_engine::build::BuildSettings {
            vars: args.vars.iter().map(|v| parse_var(v)).collect::<Result<_>>()?,
            secrets: args.secrets.iter().map(|s| parse_secret(s)).collect::<Result<_>>()?,
            remote: farm_engine::remote_cache::RemoteSettings::resolve(
                args.remote_cache.as_deref(),
                args.remote_executor.as_deref(),
                args.remote_instance.as_deref(),
                args.remote_cache_read_only,
                &project,
            )?,
        },
    };
    if args.clear_cache {
        let removed = Store::open(&ctx.farm_home)?.clear_actions()?;
        ctx.reporter.info(&format!(
            "emptied the action cache ({removed} records); the store keeps its entries"
        ));
    }
    if args.watch {
        // The watch loop only ends on Ctrl-C (status 0) or an error.
        farm_engine::watch::run(ctx, &project, &opts)?;
        return Ok(Exit::Success);
    }
    let built = build_project(ctx, &project, &opts)?;
    ctx.reporter.info(&format!("wrote {}", built.out_dir.display()));
    ctx.reporter.info(&summary(&built.metrics));
    println!("{}", built.manifest.digest);
    Ok(Exit::Success)
}

/// The line after a build, from what farm-metrics.json holds, e.g.
/// `built frontend, models in 12.3s: 3 artifacts, 1.2 MiB; cache: 1 hit, 2 misses`.
fn summary(metrics: &serde_json::Value) -> String {
    let n = |key: &str| metrics[key].as_u64().unwrap_or(0);
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let targets: Vec<&str> = metrics["targets"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    let mut line = format!(
        "built {} in {:.1}s: {}, {}; cache: {}, {}",
        targets.join(", "),
        n("total_ms") as f64 / 1000.0,
        plural(n("artifacts"), "artifact", "artifacts"),
        farm_formats::size::format_size(n("artifacts_bytes")),
        plural(n("cache_hits"), "hit", "hits"),
        plural(n("cache_misses"), "miss", "misses"),
    );
    // Remote work apart from local work: what the server gave and ran.
    let r = &metrics["remote_cache"];
    if r.is_object() {
        let rn = |key: &str| r[key].as_u64().unwrap_or(0);
        line.push_str(&format!(
            "; remote: {}, {} run remotely, {} up, {} down",
            plural(rn("hits"), "hit", "hits"),
            rn("executed_remotely"),
            farm_formats::size::format_size(rn("bytes_up")),
            farm_formats::size::format_size(rn("bytes_down")),
        ));
    }
    line
}

/// A target as `farm build` accepts it: farm's names, and the FARM design's
/// `ai` (models) and `docker` (images).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetName(Target);

impl clap::ValueEnum for TargetName {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            TargetName(Target::Frontend),
            TargetName(Target::Backend),
            TargetName(Target::Models),
            TargetName(Target::Images),
            TargetName(Target::Types),
            TargetName(Target::All),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let value = self.0.to_possible_value()?;
        Some(match self.0 {
            Target::Models => value.alias("ai"),
            Target::Images => value.alias("docker"),
            _ => value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum as _;

    /// Every engine target has a name here, and the design's aliases map to theirs.
    #[test]
    fn every_target_is_accepted_and_ai_and_docker_are_aliases() {
        for t in Target::value_variants() {
            let name = t.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(TargetName::from_str(&name, false), Ok(TargetName(*t)), "{name}");
        }
        assert_eq!(TargetName::from_str("ai", false), Ok(TargetName(Target::Models)));
        assert_eq!(TargetName::from_str("docker", false), Ok(TargetName(Target::Images)));
    }

    /// `--var NAME=VALUE` keeps everything after the first `=`; `--var NAME`
    /// reads the caller's environment and names the variable when unset.
    #[test]
    fn vars_take_a_value_or_the_callers_environment() {
        assert_eq!(parse_var("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        std::env::set_var("FARM_CLI_TEST_VAR_SET", "v");
        assert_eq!(parse_var("FARM_CLI_TEST_VAR_SET").unwrap().1, "v");
        let e = parse_var("FARM_CLI_TEST_VAR_UNSET").unwrap_err().to_string();
        assert!(
            e.contains("FARM_CLI_TEST_VAR_UNSET is not set") && e.contains("--var FARM_CLI_TEST_VAR_UNSET=VALUE"),
            "{e}"
        );
    }

    /// `--secret` reads `$NAME`, `env:VAR` or `file:PATH`; errors name the
    /// secret and the source, never a value.
    #[test]
    fn secrets_come_from_the_environment_or_a_file() {
        std::env::set_var("FARM_CLI_TEST_SECRET", "from-env");
        assert_eq!(parse_secret("FARM_CLI_TEST_SECRET").unwrap().value, b"from-env");
        assert_eq!(parse_secret("K=env:FARM_CLI_TEST_SECRET").unwrap().value, b"from-env");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "from-file\n").unwrap();
        let s = parse_secret(&format!("K=file:{}", f.display())).unwrap();
        assert_eq!((s.name.as_str(), s.value.as_slice()), ("K", &b"from-file\n"[..]));
        assert!(!format!("{s:?}").contains("from-file"), "Debug leaves the value out");
        let e = parse_secret("K=env:FARM_CLI_TEST_SECRET_UNSET")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--secret K") && e.contains("FARM_CLI_TEST_SECRET_UNSET"),
            "{e}"
        );
        let e = parse_secret("K=file:/nonexistent/farm-secret").unwrap_err().to_string();
        assert!(e.contains("--secret K: reading /nonexistent/farm-secret"), "{e}");
        let e = parse_secret("K=literal-value").unwrap_err().to_string();
        assert!(
            e.contains("NAME=env:VAR or NAME=file:PATH") && !e.contains("literal-value"),
            "{e}"
        );
    }

    /// The summary reads farm-metrics.json's fields.
    #[test]
    fn summary_names_targets_artifacts_duration_and_cache() {
        let m = serde_json::json!({
            "targets": ["frontend", "models"], "total_ms": 12_345, "artifacts": 2,
            "artifacts_bytes": 3 << 20, "cache_hits": 1, "cache_misses": 2,
        });
        assert_eq!(
            summary(&m),
            "built frontend, models in 12.3s: 2 artifacts, 3.0 MiB; cache: 1 hit, 2 misses"
        );
        let m = serde_json::json!({
            "targets": ["frontend"], "total_ms": 1_000, "artifacts": 1,
            "artifacts_bytes": 1024, "cache_hits": 2, "cache_misses": 1,
            "remote_cache": {"hits": 1, "misses": 1, "executed_remotely": 1, "bytes_up": 2048, "bytes_down": 0},
        });
        assert_eq!(
            summary(&m),
            "built frontend in 1.0s: 1 artifact, 1.0 KiB; cache: 2 hits, 1 miss; remote: 1 hit, 1 run remotely, 2.0 KiB up, 0 B down"
        );
    }
}

//! The `farm` command: parses arguments, dispatches to `commands::*`, and
//! maps the outcome to an exit status.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// How `farm` exits (README, "Exit status"); the integration tests and CI
/// scripts rely on each of these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, and the answer (if the command asks a question) is yes.
    Success,
    /// 1: the command failed; the error has been printed.
    Error,
    /// 2: the arguments were wrong (clap's own status for that).
    Usage,
    /// 3: the command ran, and its answer is no: a stale lock, missing
    /// artifacts, a corrupt store, stale types, outputs that differ.
    No,
    /// `farm exec` and `farm shell` pass on the status of what they ran.
    Command(u8),
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(match exit {
            Exit::Success => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::No => 3,
            Exit::Command(status) => status,
        })
    }
}

#[derive(Parser)]
#[command(
    name = "farm",
    version,
    about = "Hermetic, reproducible builds for FARM applications"
)]
struct Cli {
    /// The project directory (holding farm.toml).
    #[arg(long, global = true, default_value = ".", env = "FARM_PROJECT")]
    project: PathBuf,
    /// The store and cache directory [default: $XDG_CACHE_HOME/farm or ~/.cache/farm].
    #[arg(long, global = true, env = "FARM_HOME")]
    farm_home: Option<PathBuf>,
    /// Which sandbox runs steps.
    #[arg(long, global = true, value_enum, default_value = "auto", env = "FARM_SANDBOX")]
    sandbox: farm_engine::SandboxChoice,
    /// Print only errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a farm.toml for an existing FARM or Vite + FastAPI app.
    Init(commands::init::InitArgs),
    /// Resolve toolchains and dependencies and write farm.lock.
    Lock(commands::lock::LockArgs),
    /// Download everything farm.lock names into the store.
    Fetch(commands::fetch::FetchArgs),
    /// Inspect and trim the store.
    #[command(subcommand)]
    Cache(commands::cache::CacheCommand),
    /// Check the store's integrity.
    #[command(subcommand)]
    Store(commands::cache::StoreCommand),
    /// Build the project: frontend, backend, models (all by default).
    Build(commands::build::BuildArgs),
    /// Rebuild under varied conditions and compare every output (exit 3 if any differs).
    Check(commands::check::CheckArgs),
    /// Rebuild hermetically and compare with a published farm-manifest.json.
    Verify(commands::check::VerifyArgs),
    /// Compare two farm-manifest.json files without building.
    Diff(commands::check::DiffArgs),
    /// The bundle report of the last build's frontend, without building (`farm analyze bundle`).
    Analyze(commands::analyze::AnalyzeArgs),
    /// Losslessly optimise the project's sources (`farm optimize images`).
    #[command(subcommand)]
    Optimize(commands::optimize::OptimizeCommand),
    /// Push the last build's images to an OCI registry.
    Push(commands::image::PushArgs),
    /// Work with the last build's images.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Generate the frontend's TypeScript API types from the backend (sync) or check them.
    #[command(subcommand)]
    Types(commands::types::TypesCommand),
    /// Show the log of a step of the last build.
    Log(commands::log::LogArgs),
    /// The SBOM (SPDX or CycloneDX) of the lock and the last build.
    Sbom(commands::attest::SbomArgs),
    /// The SLSA provenance of the last build (an unsigned in-toto Statement).
    Provenance(commands::attest::ProvenanceArgs),
    /// Sign the provenance and SBOMs (DSSE envelopes).
    Sign(commands::attest::SignArgs),
    /// Check signed attestations against a public key, the outputs and farm.lock.
    VerifyAttestation(commands::attest::VerifyAttestationArgs),
    /// Write a new signing key pair.
    Keygen(commands::attest::KeygenArgs),
    /// Run a command in the project's hermetic environment.
    Exec(commands::exec::ExecArgs),
    /// Open an interactive shell in the project's hermetic environment.
    Shell(commands::exec::ShellArgs),
    /// Run steps for a Remote Execution API server (its Remote Workers API) in farm's sandbox.
    Worker(commands::worker::WorkerArgs),
}

pub use farm_engine::Context;

fn main() -> ExitCode {
    // The sandbox re-executes this binary to get a single-threaded process;
    // that must happen before anything starts threads.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == farm_sandbox::HELPER_ARG)
    {
        farm_sandbox::helper_main();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` come this way too, to be printed on stdout.
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Success }.into();
        }
    };
    let ctx = Context {
        project_dir: cli.project.clone(),
        farm_home: cli.farm_home.clone().unwrap_or_else(farm_store::Store::default_root),
        reporter: farm_engine::Reporter::new(cli.quiet),
        sandbox: cli.sandbox,
    };
    let result = match cli.command {
        Command::Init(a) => commands::init::run(&ctx, a),
        Command::Lock(a) => commands::lock::run(&ctx, a),
        Command::Fetch(a) => commands::fetch::run(&ctx, a),
        Command::Cache(c) => commands::cache::run_cache(&ctx, c),
        Command::Store(c) => commands::cache::run_store(&ctx, c),
        Command::Build(a) => commands::build::run(&ctx, a),
        Command::Check(a) => commands::check::run_check(&ctx, a),
        Command::Verify(a) => commands::check::run_verify(&ctx, a),
        Command::Diff(a) => commands::check::run_diff(&ctx, a),
        Command::Analyze(a) => commands::analyze::run(&ctx, a),
        Command::Optimize(c) => commands::optimize::run(&ctx, c),
        Command::Push(a) => commands::image::run_push(&ctx, a),
        Command::Image(c) => commands::image::run_image(&ctx, c),
        Command::Types(c) => commands::types::run(&ctx, c),
        Command::Log(a) => commands::log::run(&ctx, a),
        Command::Sbom(a) => commands::attest::run_sbom(&ctx, a),
        Command::Provenance(a) => commands::attest::run_provenance(&ctx, a),
        Command::Sign(a) => commands::attest::run_sign(&ctx, a),
        Command::VerifyAttestation(a) => commands::attest::run_verify_attestation(&ctx, a),
        Command::Keygen(a) => commands::attest::run_keygen(&ctx, a),
        Command::Exec(a) => commands::exec::run_exec(&ctx, a),
        Command::Shell(a) => commands::exec::run_shell(&ctx, a),
        Command::Worker(a) => commands::worker::run(&ctx, a),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            ctx.reporter.error(&format!("{e:#}"));
            Exit::Error.into()
        }
    }
}

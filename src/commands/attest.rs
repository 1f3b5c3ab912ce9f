//! `farm sbom`, `farm provenance`, `farm sign`, `farm verify-attestation`
//! and `farm keygen`: arguments into the engine's attestation options; the
//! documents and each verification check are printed here.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use farm_engine::ops::attest::{
    self, KeyType, KeygenOptions, ProvenanceOptions, SbomFormat, SbomOptions, SignOptions, VerifyAttestationOptions,
};

use crate::{Context, Exit};

#[derive(clap::Args)]
pub struct SbomArgs {
    #[arg(long, value_enum, default_value = "spdx")]
    format: SbomFormat,
    /// Write the document to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The SBOM of one image of the last build (`app`, `ollama`).
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// The lock alone, without the last build's outputs.
    #[arg(long)]
    lock_only: bool,
    /// The build's output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// List the packages added, removed and changed since the SBOM OLD
    /// (SPDX or CycloneDX JSON) in the current lock, instead of writing one.
    #[arg(long, value_name = "OLD.json", conflicts_with_all = ["image", "format"])]
    diff: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct ProvenanceArgs {
    /// Write the Statement to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The build's output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct SignArgs {
    /// The private key: PKCS#8 PEM, or cosign's encrypted key file (password from
    /// FARM_SIGNING_PASSWORD or COSIGN_PASSWORD).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// In-toto Statements or SBOMs to sign [default: a fresh provenance and the release's SBOMs].
    files: Vec<PathBuf>,
    /// The build's output directory [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where the envelopes go [default: <out>/attestations, or beside each FILE].
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct VerifyAttestationArgs {
    /// The public key (SPKI PEM, e.g. cosign.pub).
    #[arg(long, value_name = "PUB")]
    key: PathBuf,
    /// DSSE envelopes (`*.intoto.jsonl`) to check.
    #[arg(required = true, value_name = "ENVELOPE")]
    envelopes: Vec<PathBuf>,
    /// The build's output directory the subjects are checked against [default: .farm/out in the project].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    #[arg(long = "type", value_enum, default_value = "p256")]
    key_type: KeyType,
    /// Writes PREFIX.key (private, mode 0600) and PREFIX.pub.
    #[arg(long, short, value_name = "PREFIX")]
    output: PathBuf,
    /// Encrypt the private key as cosign does, with the password in
    /// FARM_SIGNING_PASSWORD or COSIGN_PASSWORD.
    #[arg(long)]
    encrypt: bool,
}

fn emit(bytes: &[u8], output: Option<&PathBuf>) -> Result<()> {
    match output {
        Some(path) => std::fs::write(path, bytes).with_context(|| path.display().to_string()),
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}

/// Entry point of `farm sbom`.
pub fn run_sbom(ctx: &Context, args: SbomArgs) -> Result<Exit> {
    if let Some(old) = &args.diff {
        let diff = attest::sbom_diff(ctx, old)?;
        emit(diff.to_text().as_bytes(), args.output.as_ref())?;
        return Ok(Exit::Success);
    }
    let bytes = attest::sbom(
        ctx,
        &SbomOptions {
            format: args.format,
            image: args.image,
            out: args.out,
            lock_only: args.lock_only,
        },
    )?;
    emit(&bytes, args.output.as_ref())?;
    Ok(Exit::Success)
}

/// Entry point of `farm provenance`.
pub fn run_provenance(ctx: &Context, args: ProvenanceArgs) -> Result<Exit> {
    let bytes = attest::provenance(ctx, &ProvenanceOptions { out: args.out })?;
    emit(&bytes, args.output.as_ref())?;
    Ok(Exit::Success)
}

/// Entry point of `farm sign`: prints each envelope written.
pub fn run_sign(ctx: &Context, args: SignArgs) -> Result<Exit> {
    let written = attest::sign(
        ctx,
        &SignOptions {
            key: args.key,
            files: args.files,
            out: args.out,
            output_dir: args.output_dir,
        },
    )?;
    for w in written {
        println!("{}", w.display());
    }
    Ok(Exit::Success)
}

/// Entry point of `farm verify-attestation`: every check, then exit 0 when
/// all of them hold and 1 otherwise.
pub fn run_verify_attestation(ctx: &Context, args: VerifyAttestationArgs) -> Result<Exit> {
    let reports = attest::verify_attestation(
        ctx,
        &VerifyAttestationOptions {
            key: args.key,
            envelopes: args.envelopes,
            out: args.out,
        },
    )?;
    let mut all = true;
    for r in &reports {
        println!("{}", r.envelope);
        for c in &r.checks {
            println!("  {} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.what, c.message);
        }
        let failed = r.checks.iter().filter(|c| !c.ok).count();
        if r.ok() {
            println!("  verified");
        } else {
            all = false;
            println!("  NOT VERIFIED: {failed} check(s) failed");
        }
    }
    Ok(if all { Exit::Success } else { Exit::Error })
}

/// Entry point of `farm keygen`.
pub fn run_keygen(ctx: &Context, args: KeygenArgs) -> Result<Exit> {
    let (private, public) = attest::keygen(&KeygenOptions {
        key_type: args.key_type,
        output: args.output,
        encrypt: args.encrypt,
    })?;
    ctx.reporter
        .info(&format!("private key: {} (keep it secret)", private.display()));
    println!("{}", public.display());
    Ok(Exit::Success)
}

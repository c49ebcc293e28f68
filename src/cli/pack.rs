//! `flowprint pack`: create, test, lint, build, sign, verify, install and list rule packs.

use super::pack_gen;
use flowprint::pack::install;
use flowprint::pack::integrity;
use flowprint::pack::ops::{self, Context};
use std::path::{Path, PathBuf};

/// Arguments of `pack`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

/// Where trusted keys come from.
#[derive(clap::Args)]
struct Trust {
    /// Directory of trusted public keys (`*.pub`) [default: $FLOWPRINT_TRUSTED_KEYS, else
    /// ~/.config/flowprint/trusted-keys].
    #[arg(long, value_name = "DIR")]
    trusted_keys: Option<PathBuf>,
    /// A trusted public key file (repeatable).
    #[arg(long, value_name = "FILE")]
    trusted_key: Vec<PathBuf>,
}

impl Trust {
    fn keys(&self) -> anyhow::Result<Vec<ed25519_dalek::VerifyingKey>> {
        let dir = self.trusted_keys.clone().or_else(|| {
            std::env::var_os("FLOWPRINT_TRUSTED_KEYS")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".config/flowprint/trusted-keys"))
                })
        });
        Ok(integrity::trusted_keys(
            &dir.into_iter().collect::<Vec<_>>(),
            &self.trusted_key,
        )?)
    }
}

#[derive(clap::Subcommand)]
enum What {
    /// Create a new pack directory that passes `pack test` and `pack lint`.
    New {
        /// The pack's name (lowercase letters, digits, `-`).
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run every fixture of a pack: pass/fail per case, and the rules no case exercises.
    /// Exit 1 on any failure.
    Test {
        /// The pack directory.
        dir: PathBuf,
        /// Installed packs it may depend on.
        #[arg(long, value_name = "DIR")]
        packs_dir: Option<PathBuf>,
        /// Print only failures and the summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Style and quality: references, titles, fixtures, rules that never fire, overlaps.
    /// Exit 1 when there are errors.
    Lint {
        /// The pack directory.
        dir: PathBuf,
        /// Installed packs it may depend on.
        #[arg(long, value_name = "DIR")]
        packs_dir: Option<PathBuf>,
    },
    /// Check, test, write MANIFEST.sha256 (and MANIFEST.sig with --sign) and an archive.
    Build {
        /// The pack directory.
        dir: PathBuf,
        /// The archive to write [default: NAME-VERSION.tar.gz].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Sign with this secret key (`pack keygen`).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Do not run the fixtures first.
        #[arg(long)]
        no_test: bool,
        /// Installed packs it may depend on.
        #[arg(long, value_name = "DIR")]
        packs_dir: Option<PathBuf>,
    },
    /// Check a pack directory or archive against its manifest and signature (exit 1 when
    /// anything does not match).
    Verify {
        /// A pack directory or .tar.gz.
        pack: PathBuf,
        #[command(flatten)]
        trust: Trust,
        /// Refuse unsigned packs.
        #[arg(long)]
        require_signature: bool,
    },
    /// Verify and install a pack into a packs directory, atomically (a running daemon watching
    /// it sees the whole pack at once).
    Install {
        /// A pack directory or .tar.gz.
        pack: PathBuf,
        /// The packs directory [default: packs].
        #[arg(long, value_name = "DIR", default_value = "packs")]
        packs_dir: PathBuf,
        #[command(flatten)]
        trust: Trust,
        /// Install a pack without a signature (its digests are still checked).
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Publish a built pack archive to a fleet (NATS JetStream object store): every worker
    /// installs it and reloads (docs/fleet.md). The archive is checked as `pack install` would
    /// first, so a pack that would not install is not published.
    Publish {
        /// The pack archive (.tar.gz from `pack build`).
        pack: PathBuf,
        /// The fleet's NATS server.
        #[arg(long, value_name = "nats://HOST:PORT")]
        nats: String,
        #[command(flatten)]
        trust: Trust,
        /// Publish a pack without a signature (workers then need fleet.allow_unsigned).
        #[arg(long)]
        allow_unsigned: bool,
        /// Replicas of the pack bucket when it is created.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// The bundled packs and those installed in a packs directory.
    List {
        /// The packs directory [default: packs].
        #[arg(long, value_name = "DIR", default_value = "packs")]
        packs_dir: PathBuf,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a signing key pair: FILE (secret, mode 0600) and FILE.pub.
    Keygen {
        /// The secret key file to create.
        file: PathBuf,
    },
    /// Generate a pack from a catalogue of exact download sizes.
    Gen(pack_gen::GenArgs),
}

fn ctx(packs_dir: Option<PathBuf>) -> Context {
    Context {
        bundled: true,
        packs_dir,
    }
}

/// Runs `pack`.
pub fn run(args: Args) -> anyhow::Result<i32> {
    match args.what {
        What::New { name, dir } => {
            let d = ops::new_pack(&dir, &name)?;
            println!("created {}", d.display());
            Ok(0)
        }
        What::Test {
            dir,
            packs_dir,
            quiet,
        } => test(&dir, packs_dir, quiet),
        What::Lint { dir, packs_dir } => {
            let findings = ops::lint_pack(&dir, &ctx(packs_dir))?;
            let errors = findings.iter().filter(|f| f.level == "error").count();
            for f in &findings {
                println!("{}: {}: {}", f.level, f.about, f.message.trim_end());
            }
            println!(
                "{}: {errors} error(s), {} warning(s)",
                dir.display(),
                findings.len() - errors
            );
            Ok(if errors > 0 { 1 } else { 0 })
        }
        What::Build {
            dir,
            output,
            sign,
            no_test,
            packs_dir,
        } => {
            let key = sign
                .as_deref()
                .map(integrity::read_signing_key)
                .transpose()?;
            let m = flowprint::sources::manifest::Manifest::read(&dir)?;
            let out =
                output.unwrap_or_else(|| PathBuf::from(format!("{}-{}.tar.gz", m.name, m.version)));
            let built =
                match ops::build_pack(&dir, &ctx(packs_dir), key.as_ref(), Some(&out), !no_test) {
                    Ok(b) => b,
                    Err(e) => {
                        eprintln!(
                            "flowprint: not built: {}",
                            flowprint::text::printable_lines(&e.to_string())
                        );
                        return Ok(1);
                    }
                };
            println!(
                "built {} {}: {} files in {}{}; archive {}",
                built.name,
                built.version,
                built.files,
                integrity::DIGESTS,
                if built.signed {
                    format!(", signed ({})", integrity::SIGNATURE)
                } else {
                    String::new()
                },
                out.display()
            );
            Ok(0)
        }
        What::Verify {
            pack,
            trust,
            require_signature,
        } => match ops::verify_pack(&pack, &trust.keys()?, require_signature) {
            Ok((m, v)) => {
                println!(
                    "{} {}: {} files match {}; {}",
                    m.name,
                    m.version,
                    v.files,
                    integrity::DIGESTS,
                    match &v.signed_by {
                        Some(k) => format!("signed by trusted key {k}"),
                        None => "not signed".into(),
                    }
                );
                Ok(0)
            }
            Err(e) => {
                eprintln!(
                    "flowprint: {}: {}",
                    flowprint::text::printable(&pack.display().to_string()),
                    flowprint::text::printable_lines(&e.to_string())
                );
                Ok(1)
            }
        },
        What::Install {
            pack,
            packs_dir,
            trust,
            allow_unsigned,
        } => match install::install_pack(&pack, &packs_dir, &trust.keys()?, allow_unsigned) {
            Ok(r) => {
                println!(
                    "installed {} {} into {} ({})",
                    r.name,
                    r.version,
                    packs_dir.display(),
                    match &r.signed_by {
                        Some(k) => format!("signed by {k}"),
                        None => "unsigned".into(),
                    }
                );
                Ok(0)
            }
            Err(e) => {
                eprintln!(
                    "flowprint: not installed: {}",
                    flowprint::text::printable_lines(&e.to_string())
                );
                Ok(1)
            }
        },
        What::Publish {
            pack,
            nats,
            trust,
            allow_unsigned,
            replicas,
        } => {
            if !pack.is_file() {
                anyhow::bail!(
                    "{}: publish a pack archive (`flowprint pack build --output`)",
                    pack.display()
                );
            }
            // Installed into a scratch directory: the checks a worker makes, made here first.
            let scratch =
                std::env::temp_dir().join(format!("flowprint-publish-{}", std::process::id()));
            let checked = install::install_pack(&pack, &scratch, &trust.keys()?, allow_unsigned);
            let _ = std::fs::remove_dir_all(&scratch);
            let rec = match checked {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "flowprint: not published: {}",
                        flowprint::text::printable_lines(&e.to_string())
                    );
                    return Ok(1);
                }
            };
            let archive =
                std::fs::read(&pack).map_err(|e| anyhow::anyhow!("{}: {e}", pack.display()))?;
            let bus = flowprint::fleet::Bus::connect(
                &nats,
                flowprint::fleet::BusConfig {
                    replicas,
                    ..Default::default()
                },
            )?;
            let digest = bus.publish_pack(&rec.name, &archive)?;
            println!(
                "published {} {} to {nats} ({} bytes, {digest})",
                rec.name,
                rec.version,
                archive.len()
            );
            Ok(0)
        }
        What::List { packs_dir, json } => {
            let packs = install::list_packs(&packs_dir)?;
            if json {
                for p in &packs {
                    println!("{}", serde_json::to_string(p)?);
                }
            } else {
                println!("{:<20} {:<10} {:>6}  origin", "pack", "version", "rules");
                for p in &packs {
                    println!(
                        "{:<20} {:<10} {:>6}  {}{}",
                        p.name,
                        p.version,
                        p.rules,
                        p.origin,
                        p.installed_at
                            .as_deref()
                            .map(|t| format!(" (installed {t})"))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(0)
        }
        What::Keygen { file } => {
            let key = integrity::generate_key()?;
            let public = integrity::write_key(&file, &key)?;
            println!(
                "secret key {} (keep it), public key {} (give it to those who install your packs)",
                file.display(),
                public.display()
            );
            Ok(0)
        }
        What::Gen(a) => pack_gen::run(a),
    }
}

fn test(dir: &Path, packs_dir: Option<PathBuf>, quiet: bool) -> anyhow::Result<i32> {
    let (m, compiled) = ops::compile_pack(dir, &ctx(packs_dir))?;
    if let Err(e) = ops::require_clean(&compiled) {
        eprintln!(
            "flowprint: {}",
            flowprint::text::printable_lines(&e.to_string())
        );
        return Ok(1);
    }
    let report = ops::test_pack(dir, &m.name, &compiled);
    for c in &report.cases {
        if c.failures.is_empty() {
            if !quiet {
                println!("pass  {} / {}", c.file, c.case);
            }
        } else {
            println!("FAIL  {} / {}", c.file, c.case);
            for f in &c.failures {
                println!("        {f}");
            }
        }
    }
    for e in &report.errors {
        println!("FAIL  {e}");
    }
    for id in &report.unexercised {
        println!("untested  {}/{id}: no case requires it to fire", m.name);
    }
    let failed = report.failed();
    println!(
        "{} {}: {} case(s), {} passed, {failed} failed; {} rule(s) without a firing case",
        m.name,
        m.version,
        report.cases.len(),
        report.cases.len()
            - report
                .cases
                .iter()
                .filter(|c| !c.failures.is_empty())
                .count(),
        report.unexercised.len()
    );
    Ok(if failed > 0 { 1 } else { 0 })
}

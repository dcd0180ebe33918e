//! `custos log verify|mirror`: check the transparency log offline.
//!
//! * Inclusion: a receipt (`sys/tlog/entry/<i>`) or every receipt in a provenance bundle,
//!   against the log key and a k-of-n witness threshold.
//! * Audit: every tile and entry bundle of a checkpoint (from a mirror directory or the
//!   server) re-hashed up to the signed root, so one altered byte is found.
//! * Consistency: an older checkpoint against a newer one, from a proof file or from tiles.

use super::Cli;
use crate::client::{CliError, CliResult, Client};
use crate::output::Format;
use clap::{Args, Subcommand};
use custos_tlog::checkpoint::Checkpoint;
use custos_tlog::entry::Entry;
use custos_tlog::merkle::{self, leaf_hash, Hash};
use custos_tlog::note::Verifier;
use custos_tlog::receipt::{self, Receipt, Trust};
use custos_tlog::tile::{self, TileId, TileSource, WIDTH};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest tile or bundle read (a full entry bundle of 256 entries of at most 64 KiB each).
const MAX_TILE: usize = 256 * (2 + 65_535);
/// Largest checkpoint, receipt, bundle or proof file read.
const MAX_FILE: usize = 4 << 20;

#[derive(Subcommand)]
pub enum LogCmd {
    /// Verify offline: inclusion (--receipt / --bundle), a full audit of a checkpoint's tiles
    /// (--checkpoint with --tiles or --online), consistency (--old with --proof or tiles).
    /// Exit 0 if everything checks out, 1 otherwise.
    Verify(VerifyArgs),
    /// Copy the log's checkpoint, tiles and entry bundles into a directory (C2SP layout).
    Mirror {
        /// The directory.
        dir: PathBuf,
    },
}

/// Whom a checkpoint must be signed by.
#[derive(Args)]
pub struct TrustArgs {
    /// The log's verifier key: the string `origin+hash+base64` that
    /// `custos read sys/tlog/key` prints as vkey (a key string, not a file).
    #[arg(long = "log-key", visible_alias = "key", value_name = "VKEY")]
    pub key: String,
    /// A witness's verifier key string (`name+hash+base64`, as `custos witness keygen`
    /// prints it; repeatable).
    #[arg(long = "witness", value_name = "VKEY")]
    witnesses: Vec<String>,
    /// Distinct witness cosignatures required on every checkpoint checked (of the --witness
    /// keys).
    #[arg(long, default_value_t = 0, value_name = "N")]
    witnesses_required: usize,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    trust: TrustArgs,
    /// A receipt (JSON: the `data` of `sys/tlog/entry/<i>`).
    #[arg(long, conflicts_with_all = ["bundle", "checkpoint"])]
    receipt: Option<PathBuf>,
    /// A provenance bundle: every receipt in its `tlogEntries`.
    #[arg(long, conflicts_with = "checkpoint")]
    bundle: Option<PathBuf>,
    /// A signed checkpoint to audit (or the newer one of a consistency check).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// An older signed checkpoint that --checkpoint must be consistent with.
    #[arg(long, requires = "checkpoint")]
    old: Option<PathBuf>,
    /// A consistency proof (JSON from `sys/tlog/proof/consistency`, or base64 lines).
    #[arg(long, requires = "old", conflicts_with_all = ["tiles", "online"])]
    proof: Option<PathBuf>,
    /// A mirror directory holding `tile/...` (see `custos log mirror`).
    #[arg(long, requires = "checkpoint", conflicts_with = "online")]
    tiles: Option<PathBuf>,
    /// Fetch tiles from the server at --address.
    #[arg(long, requires = "checkpoint")]
    online: bool,
}

pub(crate) fn read_file(p: &Path) -> CliResult<Vec<u8>> {
    let b = std::fs::read(p).map_err(|source| CliError::Io {
        what: format!("reading {}", p.display()),
        source,
    })?;
    if b.len() > MAX_FILE {
        return Err(CliError::Other(format!(
            "{}: larger than {MAX_FILE} bytes",
            p.display()
        )));
    }
    Ok(b)
}

pub(crate) fn read_text(p: &Path) -> CliResult<String> {
    String::from_utf8(read_file(p)?)
        .map_err(|_| CliError::Other(format!("{}: not UTF-8 text", p.display())))
}

pub(crate) fn trust(a: &TrustArgs) -> CliResult<Trust> {
    let usage = |m: String| CliError::Usage(m);
    let log = Verifier::parse(&a.key).map_err(|e| usage(format!("--key: {e}")))?;
    let mut witnesses = Vec::new();
    for w in &a.witnesses {
        witnesses.push(Verifier::parse(w).map_err(|e| usage(format!("--witness {w}: {e}")))?);
    }
    if a.witnesses_required > witnesses.len() {
        return Err(usage(format!(
            "--witnesses-required {} is more than the {} --witness keys given",
            a.witnesses_required,
            witnesses.len()
        )));
    }
    Ok(Trust {
        log,
        witnesses,
        threshold: a.witnesses_required,
    })
}

fn tampered(what: String) -> CliError {
    CliError::Other(format!("TAMPERED: {what}"))
}

/// Where tiles come from.
pub(crate) enum Tiles<'a> {
    Dir(&'a Path),
    Server(&'a Client),
}

fn read_tile(d: &Path, path: &str) -> CliResult<Option<Vec<u8>>> {
    let p = d.join(path);
    match std::fs::read(&p) {
        Ok(b) if b.len() <= MAX_TILE => Ok(Some(b)),
        Ok(_) => Err(tampered(format!("{path}: oversized"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CliError::Io {
            what: format!("reading {}", p.display()),
            source,
        }),
    }
}

/// The first `width` hashes or entries of a wider tile of the same index (a mirror keeps
/// only the newest width; a narrower tile is always its prefix).
fn prefix_of(id: &TileId, wider: &[u8]) -> Option<Vec<u8>> {
    let w = usize::from(id.width);
    match id.level {
        Some(_) => wider.get(..w * 32).map(<[u8]>::to_vec),
        None => tile::parse_bundle(wider)
            .filter(|e| e.len() >= w)
            .and_then(|e| tile::encode_bundle(e.into_iter().take(w))),
    }
}

impl Tiles<'_> {
    /// The signed checkpoint note (`None`: there is none).
    /// The log's newest signed checkpoint before witnesses cosigned it (`sys/tlog/head`;
    /// `None` for a mirror or a log that does not serve one).
    pub(crate) async fn head(&self) -> CliResult<Option<Vec<u8>>> {
        match self {
            Tiles::Dir(_) => Ok(None),
            Tiles::Server(c) => c.get_bytes("sys/tlog/head", MAX_FILE).await,
        }
    }

    pub(crate) async fn checkpoint(&self) -> CliResult<Option<Vec<u8>>> {
        match self {
            Tiles::Dir(d) => read_tile(d, "checkpoint"),
            Tiles::Server(c) => c.get_bytes("sys/tlog/checkpoint", MAX_FILE).await,
        }
    }

    async fn get(&self, id: &TileId) -> CliResult<Vec<u8>> {
        self.fetch(id)
            .await?
            .ok_or_else(|| tampered(format!("{} is missing", id.path())))
    }

    /// A tile or bundle (`None`: missing; a narrower one is cut from a wider one in a mirror).
    pub(crate) async fn fetch(&self, id: &TileId) -> CliResult<Option<Vec<u8>>> {
        let path = id.path();
        Ok(match self {
            Tiles::Dir(d) => match read_tile(d, &path)? {
                Some(b) => Some(b),
                None => {
                    let mut found = None;
                    for w in (u64::from(id.width) + 1..=WIDTH).rev() {
                        let wider = TileId {
                            width: u16::try_from(w).unwrap_or(256),
                            ..*id
                        };
                        if let Some(b) = read_tile(d, &wider.path())? {
                            found =
                                Some(prefix_of(id, &b).ok_or_else(|| {
                                    tampered(format!("{}: too short", wider.path()))
                                })?);
                            break;
                        }
                    }
                    found
                }
            },
            Tiles::Server(c) => c.get_bytes(&format!("sys/tlog/{path}"), MAX_TILE).await?,
        })
    }
}

/// Every hash tile of the tree of `size`, by (tile level, index).
async fn hash_tiles(src: &Tiles<'_>, size: u64) -> CliResult<HashMap<(u8, u64), Vec<Hash>>> {
    let mut out = HashMap::new();
    for id in tile::tiles_for(size) {
        let b = src.get(&id).await?;
        let h = tile::tile_hashes(&b)
            .filter(|h| h.len() == usize::from(id.width))
            .ok_or_else(|| tampered(format!("{}: not {} hashes", id.path(), id.width)))?;
        out.insert((id.level.unwrap_or(0), id.index), h);
    }
    Ok(out)
}

/// The audit: entries → level-0 tiles → root, against the signed checkpoint.
async fn audit(src: &Tiles<'_>, cp: &Checkpoint) -> CliResult<(u64, HashMap<&'static str, u64>)> {
    let tiles = hash_tiles(src, cp.size).await?;
    let source = TileSource {
        fetch: |l: u8, i: u64| tiles.get(&(l, i)).cloned(),
    };
    let root = merkle::root(&source, cp.size)
        .map_err(|e| tampered(format!("the tiles do not make a tree: {e}")))?;
    if root != cp.root {
        return Err(tampered(format!(
            "the tiles hash to a root other than the checkpoint's (size {})",
            cp.size
        )));
    }
    let mut kinds: HashMap<&'static str, u64> = HashMap::new();
    let bundles = cp.size.div_ceil(WIDTH);
    for n in 0..bundles {
        let width = (cp.size - n * WIDTH).min(WIDTH);
        let id = TileId {
            level: None,
            index: n,
            width: u16::try_from(width).unwrap_or(256),
        };
        let b = src.get(&id).await?;
        let entries = tile::parse_bundle(&b)
            .filter(|e| e.len() as u64 == width)
            .ok_or_else(|| tampered(format!("{}: not {width} entries", id.path())))?;
        let level0 = tiles
            .get(&(0, n))
            .ok_or_else(|| tampered(format!("level-0 tile {n} is missing")))?;
        for (i, e) in entries.iter().enumerate() {
            if leaf_hash(e) != level0[i] {
                return Err(tampered(format!(
                    "entry {} does not hash to its leaf in the tiles",
                    n * WIDTH + i as u64
                )));
            }
            let entry = Entry::parse(e)
                .map_err(|x| tampered(format!("entry {}: {x}", n * WIDTH + i as u64)))?;
            *kinds.entry(entry.event.kind()).or_default() += 1;
        }
    }
    Ok((cp.size, kinds))
}

fn parse_proof(text: &str) -> CliResult<Vec<Hash>> {
    let list: Vec<String> = match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            let arr = v
                .pointer("/data/consistency_proof")
                .or_else(|| v.get("consistency_proof"))
                .cloned()
                .unwrap_or(v);
            serde_json::from_value(arr)
                .map_err(|_| CliError::Other("--proof: no consistency_proof list".into()))?
        }
        Err(_) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect(),
    };
    receipt::decode_hashes(&list).map_err(|e| CliError::Other(format!("--proof: {e}")))
}

pub async fn run(cli: &Cli, c: &LogCmd) -> CliResult<()> {
    match c {
        LogCmd::Verify(a) => verify(cli, a).await,
        LogCmd::Mirror { dir } => mirror(cli, dir).await,
    }
}

fn say(cli: &Cli, human: String, v: Value) {
    if cli.format == Format::Json {
        outln!("{v}");
    } else {
        outln!("{human}");
    }
}

async fn verify(cli: &Cli, a: &VerifyArgs) -> CliResult<()> {
    let t = trust(&a.trust)?;
    let receipts: Vec<Value> = if let Some(p) = &a.receipt {
        let v: Value = serde_json::from_slice(&read_file(p)?)
            .map_err(|e| CliError::Other(format!("{}: not JSON: {e}", p.display())))?;
        vec![v.get("data").cloned().unwrap_or(v)]
    } else if let Some(p) = &a.bundle {
        let b = custos_provenance::bundle::Bundle::parse(&read_file(p)?)
            .map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?;
        if b.tlog_entries.is_empty() {
            return Err(CliError::Other(format!(
                "{}: the bundle carries no transparency-log receipt",
                p.display()
            )));
        }
        b.tlog_entries
    } else {
        Vec::new()
    };
    for (i, v) in receipts.iter().enumerate() {
        let r = Receipt::parse(v).map_err(|e| CliError::Other(format!("receipt {i}: {e}")))?;
        let ok = r
            .verify(&t)
            .map_err(|e| CliError::Other(format!("receipt {i}: NOT VERIFIED: {e}")))?;
        say(
            cli,
            format!(
                "OK: entry {} ({}, time {}) is in {} at size {}; {} witness cosignature(s)",
                r.index,
                ok.entry.event.kind(),
                ok.entry.time,
                ok.checkpoint.origin,
                ok.checkpoint.size,
                ok.witness_times.len()
            ),
            json!({"included": true, "index": r.index, "type": ok.entry.event.kind(),
                   "time": ok.entry.time, "size": ok.checkpoint.size,
                   "witnesses": ok.witness_times.len()}),
        );
    }
    if !receipts.is_empty() {
        return Ok(());
    }
    let Some(cp_path) = &a.checkpoint else {
        return Err(CliError::Usage(
            "give --receipt, --bundle or --checkpoint".into(),
        ));
    };
    let (cp, _) = receipt::open_checkpoint(&read_text(cp_path)?, &t)
        .map_err(|e| CliError::Other(format!("{}: {e}", cp_path.display())))?;
    let client;
    let src = match (&a.tiles, a.online) {
        (Some(d), _) => Some(Tiles::Dir(d)),
        (None, true) => {
            client = cli.client()?;
            Some(Tiles::Server(&client))
        }
        (None, false) => None,
    };
    if let Some(src) = &src {
        let (size, kinds) = audit(src, &cp).await?;
        let mut k: Vec<_> = kinds.into_iter().collect();
        k.sort();
        say(
            cli,
            format!(
                "OK: all {size} entries and every tile hash to the signed root ({})",
                k.iter()
                    .map(|(t, n)| format!("{t}: {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json!({"audited": true, "size": size, "types": k.into_iter().collect::<HashMap<_, _>>()}),
        );
    }
    if let Some(old_path) = &a.old {
        let (old, _) = receipt::open_checkpoint(&read_text(old_path)?, &t)
            .map_err(|e| CliError::Other(format!("{}: {e}", old_path.display())))?;
        let proof = match (&a.proof, &src) {
            (Some(p), _) => parse_proof(&read_text(p)?)?,
            (None, Some(src)) => {
                let tiles = hash_tiles(src, cp.size).await?;
                let source = TileSource {
                    fetch: |l: u8, i: u64| tiles.get(&(l, i)).cloned(),
                };
                merkle::consistency_proof(&source, old.size, cp.size)
                    .map_err(|e| tampered(format!("consistency proof from tiles: {e}")))?
            }
            (None, None) => {
                return Err(CliError::Usage(
                    "--old needs --proof, --tiles or --online".into(),
                ))
            }
        };
        merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &proof).map_err(
            |_| {
                CliError::Other(format!(
                    "INCONSISTENT: the checkpoint of size {} is not an extension of the one of size {} (the log forked or rewrote history)",
                    cp.size, old.size
                ))
            },
        )?;
        say(
            cli,
            format!("OK: size {} is consistent with size {}", cp.size, old.size),
            json!({"consistent": true, "old": old.size, "new": cp.size}),
        );
    } else if src.is_none() {
        return Err(CliError::Usage(
            "--checkpoint needs --tiles, --online or --old".into(),
        ));
    }
    Ok(())
}

fn write_new(dir: &Path, rel: &str, bytes: &[u8]) -> CliResult<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CliError::Io {
            what: format!("creating {}", parent.display()),
            source,
        })?;
    }
    std::fs::write(&p, bytes).map_err(|source| CliError::Io {
        what: format!("writing {}", p.display()),
        source,
    })
}

async fn mirror(cli: &Cli, dir: &Path) -> CliResult<()> {
    let c = cli.client()?;
    let note = c
        .get_bytes("sys/tlog/checkpoint", MAX_FILE)
        .await?
        .ok_or_else(|| CliError::Other("the server has no transparency log".into()))?;
    let text = String::from_utf8(note.clone())
        .map_err(|_| CliError::Other("the checkpoint is not text".into()))?;
    let body_end = text
        .find("\n\n")
        .ok_or_else(|| CliError::Other("the checkpoint is not a signed note".into()))?;
    let cp = Checkpoint::parse(&text[..=body_end])
        .map_err(|e| CliError::Other(format!("checkpoint: {e}")))?;
    let src = Tiles::Server(&c);
    let tiles = tile::tiles_for(cp.size);
    let bar = crate::progress::items(
        Some(tiles.len() as u64 + cp.size.div_ceil(WIDTH)),
        "mirroring tiles and entry bundles",
    );
    let mut n = 0;
    for id in tiles {
        write_new(dir, &id.path(), &src.get(&id).await?)?;
        n += 1;
        bar.inc(1);
    }
    for b in 0..cp.size.div_ceil(WIDTH) {
        let id = TileId {
            level: None,
            index: b,
            width: u16::try_from((cp.size - b * WIDTH).min(WIDTH)).unwrap_or(256),
        };
        write_new(dir, &id.path(), &src.get(&id).await?)?;
        n += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_new(dir, "checkpoint", &note)?;
    say(
        cli,
        format!(
            "mirrored {} at size {} ({n} tiles and bundles) into {}",
            cp.origin,
            cp.size,
            dir.display()
        ),
        json!({"origin": cp.origin, "size": cp.size, "files": n + 1}),
    );
    Ok(())
}

//! Whole directory trees through the CAS: uploading one from disk (what an
//! Action's input root needs before it can run remotely) and writing one
//! back out of the CAS by its root `Directory` digest (what a worker does
//! with an input root). Every file written is checked against its digest.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::proto::{Directory, Tree};
use crate::tree::{self, MerkleTree};
use crate::{decode, digest_string, BlobData, Client, Digest, Error, Result};

/// Files up to this size are read in batches, larger ones streamed to disk.
const SMALL: i64 = 1 << 20;
/// A tree deeper than this is refused (a cycle or an attack).
const MAX_DEPTH: usize = 256;

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

impl Client {
    /// Uploads the Directory messages and files of `tree` that the CAS does
    /// not have yet (FindMissingBlobs first); the bytes sent.
    pub async fn upload_tree(&self, tree: &MerkleTree) -> Result<u64> {
        let mut blobs: Vec<(Digest, BlobData)> = vec![];
        for (d, bytes, _) in &tree.directories {
            blobs.push((d.clone(), BlobData::Bytes(bytes.clone())));
        }
        for (d, p) in &tree.files {
            blobs.push((d.clone(), BlobData::File(p.clone())));
        }
        self.upload(blobs).await
    }

    /// The `Tree` (root and every descendant Directory) under `root`, read
    /// from the CAS level by level.
    pub async fn read_tree(&self, root: &Digest) -> Result<Tree> {
        let root_bytes = self.read_blob(root).await?;
        let root_msg: Directory = decode(&root_bytes, &format!("directory {}", digest_string(root)))?;
        let mut children = vec![];
        let mut seen: HashSet<String> = HashSet::new();
        let mut level: Vec<Digest> = subdirs(&root_msg);
        let mut depth = 0;
        while !level.is_empty() {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(Error::Invalid(format!(
                    "the tree {} is nested deeper than {MAX_DEPTH} directories",
                    digest_string(root)
                )));
            }
            level.retain(|d| seen.insert(d.hash.clone()));
            let mut next = vec![];
            for chunk in level.chunks(256) {
                for (d, bytes) in chunk.iter().zip(self.read_blobs(chunk).await?) {
                    let msg: Directory = decode(&bytes, &format!("directory {}", digest_string(d)))?;
                    next.extend(subdirs(&msg));
                    children.push(msg);
                }
            }
            level = next;
        }
        Ok(Tree {
            root: Some(root_msg),
            children,
        })
    }

    /// Writes the tree under `root` into `dir` (created; it must not
    /// exist): directories, files with their executable bit, symlinks as
    /// recorded. Names are single path components (tree::layout checks).
    /// Returns the bytes read. On an error nothing is left at `dir`.
    pub async fn materialize(&self, root: &Digest, dir: &Path) -> Result<u64> {
        let t = self.read_tree(root).await?;
        let layout = tree::layout(&t, root)?;
        std::fs::create_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
        let r = self.write_layout(&layout, dir).await;
        if r.is_err() {
            let _ = std::fs::remove_dir_all(dir);
        }
        r
    }

    async fn write_layout(&self, layout: &tree::Layout, dir: &Path) -> Result<u64> {
        for d in &layout.dirs {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(io(format!("creating {}", p.display())))?;
        }
        let mut down = 0u64;
        let (small, large): (Vec<_>, Vec<_>) = layout.files.iter().partition(|(_, d, _)| d.size_bytes <= SMALL);
        // Each distinct blob is read once, however many files hold it.
        let mut unique: Vec<Digest> = small.iter().map(|(_, d, _)| d.clone()).collect();
        unique.sort_by(|a, b| a.hash.cmp(&b.hash));
        unique.dedup();
        let mut data: HashMap<String, Vec<u8>> = HashMap::new();
        for chunk in unique.chunks(256) {
            for (d, bytes) in chunk.iter().zip(self.read_blobs(chunk).await?) {
                data.insert(d.hash.clone(), bytes);
            }
        }
        for (path, d, _) in &small {
            let p = dir.join(path);
            // create_new: a name twice in the tree is an error, never an overwrite.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .and_then(|mut f| f.write_all(&data[&d.hash]))
                .map_err(io(format!("writing {}", p.display())))?;
            down += d.size_bytes as u64;
        }
        for (path, d, _) in &large {
            self.read_blob_to_file(d, &dir.join(path)).await?;
            down += d.size_bytes as u64;
        }
        for (path, _, exec) in &layout.files {
            let p = dir.join(path);
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("setting the mode of {}", p.display())))?;
        }
        for (path, target) in &layout.symlinks {
            let p = dir.join(path);
            std::os::unix::fs::symlink(target, &p).map_err(io(format!("creating the symlink {}", p.display())))?;
        }
        Ok(down)
    }
}

fn subdirs(d: &Directory) -> Vec<Digest> {
    d.directories.iter().filter_map(|n| n.digest.clone()).collect()
}

//! The pool's journal: every pooled transaction (EIP-2718 bytes, blob transactions with their
//! sidecars, and whether it is local) written
//! to a file in the datadir on shutdown and periodically, read back on start and re-admitted
//! through the normal checks against the new head (mined or now-invalid transactions drop out).
//!
//! Format: the magic `PSEQPOOL1`, then per transaction a flags byte (bit 0: local), a big-endian
//! u32 length and the bytes. Writes go to a temporary file that is renamed over the journal, so a
//! crash mid-write leaves the previous journal whole.

use crate::{pool::Pool, validate::recover, PoolError, SenderAccount};
use alloy_primitives::{Address, Bytes};
use std::{io::Write, path::Path};

const MAGIC: &[u8] = b"PSEQPOOL1";

/// A journal that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the file failed.
    #[error("pool journal {path}: {source}")]
    Io {
        /// The journal file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a journal or is cut short.
    #[error("pool journal {path} is corrupt: {what}")]
    Corrupt {
        /// The journal file.
        path: String,
        /// What is wrong.
        what: String,
    },
}

/// One journaled transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// EIP-2718 encoding.
    pub raw: Bytes,
    /// Submitted locally (over RPC).
    pub local: bool,
}

/// Writes every pooled transaction to `path` (atomically: temporary file, then rename).
pub fn save(pool: &Pool, path: &Path) -> Result<usize, JournalError> {
    let io = |source| JournalError::Io { path: path.display().to_string(), source };
    let mut out = Vec::with_capacity(MAGIC.len() + 256 * pool.status().pending);
    out.extend_from_slice(MAGIC);
    let mut count = 0;
    for txs in pool.content().values() {
        // Impersonated transactions carry placeholder signatures: re-admission could not
        // recover their senders, so they are not journaled.
        for entry in txs.values().filter(|e| !e.tx.impersonated) {
            let raw = entry.tx.network_encoding();
            out.push(u8::from(entry.local));
            out.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            out.extend_from_slice(&raw);
            count += 1;
        }
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&out).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(count)
}

/// Reads a journal; a missing file is an empty journal.
pub fn load(path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(JournalError::Io { path: path.display().to_string(), source }),
    };
    let corrupt = |what: &str| JournalError::Corrupt { path: path.display().to_string(), what: what.to_string() };
    let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(|| corrupt("not a pool journal"))?;
    let mut entries = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(corrupt("truncated entry header"));
        }
        let local = rest[0] & 1 == 1;
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        rest = &rest[5..];
        if rest.len() < len {
            return Err(corrupt("truncated transaction"));
        }
        entries.push(JournalEntry { raw: Bytes::copy_from_slice(&rest[..len]), local });
        rest = &rest[len..];
    }
    Ok(entries)
}

/// What re-admitting a journal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Transactions back in the pool.
    pub added: usize,
    /// Transactions that no longer pass admission, with why (mined ones say "nonce too low").
    pub dropped: Vec<PoolError>,
}

/// Re-admits journaled transactions, each sender checked against `account_of` (the new head).
pub fn reload(pool: &mut Pool, entries: &[JournalEntry], account_of: &mut dyn FnMut(Address) -> SenderAccount) -> Reloaded {
    let mut result = Reloaded::default();
    // Nonce order per sender, so that chains come back without transient gaps.
    let mut recovered: Vec<_> = entries.iter().filter_map(|e| match recover(&e.raw, &pool.config().validation) {
        Ok(tx) => Some((tx, e.local)),
        Err(error) => {
            result.dropped.push(error);
            None
        }
    }).collect();
    recovered.sort_by_key(|(tx, _)| (tx.sender, tx.nonce()));
    for (tx, local) in recovered {
        let account = account_of(tx.sender);
        match pool.add(tx, account, local) {
            Ok(_) => result.added += 1,
            Err(error) => result.dropped.push(error),
        }
    }
    result
}

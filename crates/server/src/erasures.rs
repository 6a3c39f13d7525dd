//! The erasure ledger: one line per erasure of a customer's personal data, appended (and
//! synced) by the API before it answers, in a file kept apart from the store and its
//! backups (`--erasure-ledger`, default `erasures.ndjson` in the data directory).
//!
//! Why apart: a backup holds the data keys as they were when it was taken. Restoring one
//! taken before an erasure would bring the erased customer's key, and so their data,
//! back. `cornershop backup restore` reads the ledger and erases every customer it names
//! again, before the restored shop serves anyone.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErasureEntry {
    pub customer_id: String,
    pub erased_at: DateTime<Utc>,
}

/// The ledger file of a process.
#[derive(Debug)]
pub struct ErasureLedger {
    path: PathBuf,
    /// One append at a time: lines never interleave.
    appending: tokio::sync::Mutex<()>,
}

impl ErasureLedger {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            appending: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and syncs it to disk.
    pub async fn record(&self, entry: &ErasureEntry) -> std::io::Result<()> {
        let _one = self.appending.lock().await;
        let path = self.path.clone();
        let line = serde_json::to_string(entry).expect("an entry serializes") + "\n";
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(line.as_bytes())?;
            file.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Every entry of the ledger at `path`, in order. A last line cut short (a crash while
    /// appending, before the erasure was answered) is skipped; any other bad line is an
    /// error naming it.
    pub fn read(path: &Path) -> anyhow::Result<Vec<ErasureEntry>> {
        let file = std::fs::File::open(path).map_err(|e| {
            anyhow::anyhow!("cannot open the erasure ledger {}: {e}", path.display())
        })?;
        let lines: Vec<String> = std::io::BufReader::new(file)
            .lines()
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow::anyhow!("cannot read the erasure ledger {}: {e}", path.display())
            })?;
        let mut entries = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(entry) => entries.push(entry),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => anyhow::bail!(
                    "line {} of the erasure ledger {} is not an erasure: {e}",
                    i + 1,
                    path.display()
                ),
            }
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_read_back_in_order_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = ErasureLedger::new(dir.path().join("sub/erasures.ndjson"));
        let at = Utc::now();
        for id in ["c-1", "c-2"] {
            ledger
                .record(&ErasureEntry {
                    customer_id: id.into(),
                    erased_at: at,
                })
                .await
                .unwrap();
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap();
        file.write_all(b"{\"customerId\":\"c-3\",\"era").unwrap();
        let read = ErasureLedger::read(ledger.path()).unwrap();
        assert_eq!(
            read.iter()
                .map(|e| e.customer_id.as_str())
                .collect::<Vec<_>>(),
            ["c-1", "c-2"]
        );
    }
}

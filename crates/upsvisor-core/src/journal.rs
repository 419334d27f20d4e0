//! Where the sequencer's state survives a controller restart.
//!
//! The engine saves the whole [`crate::Sequencer`] state (JSON) after every
//! change, before it runs the commands that change produced. A controller
//! that restarts mid-episode loads it, takes every command that was in flight
//! as delivered (so none is sent twice), and carries on, with its list of
//! VMs to restore intact.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Durable storage for one JSON document.
pub trait Journal: Send {
    /// The last saved document, if any.
    fn load(&mut self) -> Result<Option<String>>;
    /// Replaces the document; returns only once it is durable.
    fn save(&mut self, doc: &str) -> Result<()>;
}

/// A journal in memory; clones share the document (a "restart" in tests is
/// a new engine built from a clone).
#[derive(Debug, Clone, Default)]
pub struct MemJournal(Arc<Mutex<Option<String>>>);

impl MemJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Journal for MemJournal {
    fn load(&mut self) -> Result<Option<String>> {
        Ok(self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    fn save(&mut self, doc: &str) -> Result<()> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc.to_owned());
        Ok(())
    }
}

/// A journal in a file: written to a temporary file beside it, fsynced,
/// renamed over the old one, and the directory fsynced, so a power cut
/// leaves either the old or the new document, never half of one.
#[derive(Debug, Clone)]
pub struct FileJournal {
    path: PathBuf,
}

impl FileJournal {
    /// A journal at `path` (the file need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileJournal { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &str, e: std::io::Error) -> Error {
        Error::config(
            self.path.display().to_string(),
            format!("journal {what}: {e}"),
        )
    }
}

impl Journal for FileJournal {
    fn load(&mut self) -> Result<Option<String>> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("read", e)),
        }
    }

    fn save(&mut self, doc: &str) -> Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.err("create", e))?;
        f.write_all(doc.as_bytes())
            .map_err(|e| self.err("write", e))?;
        f.sync_all().map_err(|e| self.err("fsync", e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err("rename", e))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                // Directory fsync makes the rename durable; not every
                // filesystem supports it, and the data itself is synced.
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_journal_round_trip() {
        let dir = std::env::temp_dir().join(format!("upsvisor-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut j = FileJournal::new(dir.join("state.json"));
        assert_eq!(j.load().unwrap(), None);
        j.save("{\"a\":1}").unwrap();
        j.save("{\"a\":2}").unwrap();
        assert_eq!(j.load().unwrap().as_deref(), Some("{\"a\":2}"));
        assert!(!dir.join("state.json.tmp").exists());
        let mut bad = FileJournal::new(dir.join("no/such/dir/state.json"));
        let e = bad.save("x").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(e.to_string().contains("no/such/dir"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

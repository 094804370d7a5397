//! Where checkpoints are kept: a small interface that a local directory implements now and an
//! object store can implement later.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::error::io_error_at as at;

/// A place for checkpoint files, addressed by `/`-separated paths relative to its root.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes a whole file; readers see either no file or all of it.
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// Reads a whole file.
    fn get(&self, path: &str) -> io::Result<Vec<u8>>;
    /// The names of the entries directly under `dir` (empty if it does not exist).
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Removes `dir` and everything under it (no error if it does not exist).
    fn remove(&self, dir: &str) -> io::Result<()>;
    /// A human name of `path` for messages.
    fn describe(&self, path: &str) -> String;
}

/// Checkpoints in a local directory: each file is written beside its final name, synced and
/// renamed into place, and the directory synced, so a crash never leaves half a file.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// A store rooted at `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }
}

impl CheckpointStore for LocalDir {
    fn put(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
        let name = target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let staged = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut file = File::create(&staged).map_err(|e| at(&staged, e))?;
        file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| at(&staged, e))?;
        drop(file);
        std::fs::rename(&staged, &target).map_err(|e| at(&target, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| at(dir, e))
    }

    fn get(&self, path: &str) -> io::Result<Vec<u8>> {
        let target = self.root.join(path);
        std::fs::read(&target).map_err(|e| at(&target, e))
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let target = self.root.join(dir);
        let entries = match std::fs::read_dir(&target) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(at(&target, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| at(&target, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn remove(&self, dir: &str) -> io::Result<()> {
        let target = self.root.join(dir);
        match std::fs::remove_dir_all(&target) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(&target, e)),
            _ => Ok(()),
        }
    }

    fn describe(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_whole_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        store.put("job/chk-1/a.bin", b"one").unwrap();
        store.put("job/chk-1/a.bin", b"two").unwrap();
        store.put("job/chk-2/b.bin", b"three").unwrap();
        assert_eq!(store.get("job/chk-1/a.bin").unwrap(), b"two");
        assert_eq!(store.list("job").unwrap(), ["chk-1", "chk-2"]);
        assert_eq!(store.list("job/chk-1").unwrap(), ["a.bin"], "no temporary file is left");
        store.remove("job/chk-1").unwrap();
        store.remove("job/chk-1").unwrap();
        assert_eq!(store.list("job").unwrap(), ["chk-2"]);
        assert!(store.list("nothing").unwrap().is_empty());
        let error = store.get("job/chk-9/x.bin").unwrap_err();
        assert!(error.to_string().contains("chk-9"), "{error}");
    }
}

//! Where output files are written and how they become visible.
//!
//! A file is written hidden, finished, and then **published** in one atomic step, so a reader
//! never sees a partial file. [`FileStore`] is that lifecycle; [`LocalStore`] implements it on
//! a local directory (a `.`-prefixed `.inprogress` file beside the final one, then a rename).
//! An object store implements it with a multipart upload that is completed on publish.
//!
//! Publishing is separate from finishing so that a checkpoint can hold finished files as
//! [`PendingFile`]s and publish them only once the checkpoint is complete everywhere (a
//! two-phase commit); `publish` is idempotent so that recovery can repeat it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tributary_runtime::error::io_error_at as at;

/// A finished, not yet visible file: what is needed to publish or discard it later, also from
/// another process after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingFile {
    /// The path readers will see, relative to the store's root.
    pub path: String,
    /// The store's handle on the hidden file (a local path, an upload id).
    pub staged: String,
}

/// A destination for whole files that appear atomically.
pub trait FileStore: Send + Sync + 'static {
    /// A file being written.
    type Writer: Write + Send + 'static;

    /// Begins a hidden file that will be visible at `path` (relative to the root) once
    /// published.
    fn create(&self, path: &str) -> io::Result<(Self::Writer, PendingFile)>;

    /// Finishes writing (the writer is dropped next): every byte is durable but the file is
    /// still hidden.
    fn finish(&self, writer: &mut Self::Writer) -> io::Result<()>;

    /// Makes a finished file visible, atomically; publishing it again is a no-op. Never
    /// replaces another file.
    fn publish(&self, file: &PendingFile) -> io::Result<()>;

    /// Removes a hidden file that will never be published (best effort, never fails).
    fn discard(&self, file: &PendingFile);

    /// A human name of `path` for messages (`/data/out/dt=…/part-….parquet`).
    fn describe(&self, path: &str) -> String;
}

/// Files in a local directory; hidden files are `.<name>.inprogress` beside the final one
/// (readers such as Spark, pyarrow and DuckDB's globs on `*.parquet` skip them), published by
/// `rename`, which is atomic within one file system.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on the first file).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn staged_path(&self, path: &str) -> PathBuf {
        let final_path = self.root.join(path);
        let name = final_path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        final_path.with_file_name(format!(".{name}.inprogress"))
    }
}

/// A file being written to a [`LocalStore`] (or in place, see [`LocalFile::create`]).
#[derive(Debug)]
pub struct LocalFile {
    out: BufWriter<File>,
    written: u64,
}

impl LocalFile {
    /// Creates (or truncates) a file written in place, visible while it is written.
    pub fn create(path: &Path) -> io::Result<LocalFile> {
        Ok(LocalFile::new(File::create(path).map_err(|e| at(path, e))?))
    }

    fn new(file: File) -> LocalFile {
        LocalFile { out: BufWriter::with_capacity(1 << 20, file), written: 0 }
    }

    /// Bytes written so far (some perhaps still buffered).
    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Write for LocalFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl FileStore for LocalStore {
    type Writer = LocalFile;

    fn create(&self, path: &str) -> io::Result<(LocalFile, PendingFile)> {
        let staged = self.staged_path(path);
        if let Some(dir) = staged.parent() {
            std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
        }
        let file = File::create_new(&staged).map_err(|e| at(&staged, e))?;
        let pending =
            PendingFile { path: path.to_owned(), staged: staged.to_string_lossy().into_owned() };
        Ok((LocalFile::new(file), pending))
    }

    fn finish(&self, writer: &mut LocalFile) -> io::Result<()> {
        writer.out.flush()?;
        writer.out.get_ref().sync_all()
    }

    fn publish(&self, file: &PendingFile) -> io::Result<()> {
        let staged = Path::new(&file.staged);
        let target = self.root.join(&file.path);
        if target.exists() {
            if !staged.exists() {
                return Ok(()); // published before (recovery repeats the step)
            }
            return Err(at(&target, io::Error::new(io::ErrorKind::AlreadyExists, "file exists")));
        }
        match std::fs::rename(staged, &target) {
            // Another worker published it first (recovery after rescaling).
            Err(e) if e.kind() == io::ErrorKind::NotFound && target.exists() => return Ok(()),
            result => result.map_err(|e| at(staged, e))?,
        }
        // Make the rename itself durable.
        if let Some(dir) = target.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| at(dir, e))?;
        }
        Ok(())
    }

    fn discard(&self, file: &PendingFile) {
        let _ = std::fs::remove_file(&file.staged);
    }

    fn describe(&self, path: &str) -> String {
        self.root.join(path).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_hidden_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let (mut writer, pending) = store.create("dt=1/part-0.parquet").unwrap();
        writer.write_all(b"data").unwrap();
        store.finish(&mut writer).unwrap();
        let visible = dir.path().join("dt=1/part-0.parquet");
        assert!(!visible.exists());
        assert!(Path::new(&pending.staged).ends_with("dt=1/.part-0.parquet.inprogress"));
        store.publish(&pending).unwrap();
        assert_eq!(std::fs::read(&visible).unwrap(), b"data");
        store.publish(&pending).unwrap(); // idempotent
        let (mut writer, again) = store.create("dt=1/part-0.parquet").unwrap();
        store.finish(&mut writer).unwrap();
        let error = store.publish(&again).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        store.discard(&again);
        assert!(!Path::new(&again.staged).exists());
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blocked"), b"a file, not a folder").unwrap();
        let store = LocalStore::new(dir.path());
        let error = store.create("blocked/part-0.parquet").unwrap_err();
        assert!(error.to_string().contains("blocked"), "{error}");
    }
}

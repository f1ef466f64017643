//! File helpers shared by the store's modules: errors that name the file,
//! and syncs.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use sled::Db;

use crate::StoreError;

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_error(path))
}

/// Makes sled's writes durable: its flush writes with `sync_file_range`,
/// which neither persists metadata nor flushes the drive's cache (sled issue
/// #1452), so the `db` file is fdatasynced after it, and so are the blob
/// files sled made since the last call (it writes large values there and
/// never syncs them), then their directory.
pub(crate) fn sync_sled(
    path: &Path,
    db: &Db,
    synced_blobs: &mut HashSet<std::ffi::OsString>,
) -> Result<(), StoreError> {
    db.flush().map_err(|source| StoreError::Sled {
        path: path.to_owned(),
        source,
    })?;
    let db_file = path.join("db");
    File::open(&db_file)
        .and_then(|f| f.sync_data())
        .map_err(io_error(&db_file))?;
    let blobs = path.join("blobs");
    let mut new_blobs = false;
    for entry in std::fs::read_dir(&blobs).map_err(io_error(&blobs))? {
        let entry = entry.map_err(io_error(&blobs))?;
        if !synced_blobs.contains(&entry.file_name()) {
            let file = entry.path();
            // sled may have collected it meanwhile: then it needs no sync.
            match File::open(&file) {
                Ok(f) => f.sync_all().map_err(io_error(&file))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&file)(e)),
            }
            synced_blobs.insert(entry.file_name());
            new_blobs = true;
        }
    }
    if new_blobs {
        sync_dir(&blobs)?;
    }
    Ok(())
}

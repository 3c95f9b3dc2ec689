//! Finding the JSON fixture files under the paths given on the command line.

use std::path::{Path, PathBuf};

/// Every `.json` file under `paths` (files are taken as they are), sorted, without duplicates.
pub fn json_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for path in paths {
        if !path.exists() {
            return Err(format!("{}: no such file or directory", path.display()));
        }
        if path.is_file() {
            files.push(path.clone());
            continue;
        }
        for entry in walkdir::WalkDir::new(path).into_iter() {
            let entry = entry.map_err(|e| format!("{}: {e}", path.display()))?;
            if entry.file_type().is_file() && entry.path().extension().is_some_and(|e| e == "json") {
                files.push(entry.path().to_path_buf());
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The file name of `path` as text.
pub fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
}

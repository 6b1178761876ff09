//! The watermark: the time up to which an earlier export saw every change.
//!
//! Kept beside the data as `_watermark.json` (readers skip names starting with `_`). The next
//! export re-exports every day holding a payment created or changed since then, so late
//! decisions and captures reach the files too.

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "_watermark.json";

#[derive(Debug, Serialize, Deserialize)]
struct Watermark {
    /// Start of the export's snapshot: every change committed before it was exported.
    exported_through: DateTime<Utc>,
}

/// The last export's watermark, `None` before the first export.
pub fn read(out: &Path) -> anyhow::Result<Option<DateTime<Utc>>> {
    let path = out.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let watermark: Watermark = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a watermark file", path.display()))?;
    Ok(Some(watermark.exported_through))
}

/// Records `at` atomically (temporary file, then rename).
pub fn write(out: &Path, at: DateTime<Utc>) -> anyhow::Result<()> {
    let temp = out.join(format!(".{FILE_NAME}.tmp"));
    let text = serde_json::to_string(&Watermark {
        exported_through: at,
    })?;
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, out.join(FILE_NAME))?;
    super::partition::sync_dir(out)
}

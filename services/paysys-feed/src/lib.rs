//! The paysys data feed: `export` (PostgreSQL → day-partitioned Parquet) and `report`
//! (totals and conversions on an embedded DataFusion). See docs/data-feed.md.

pub mod export;
pub mod key;
mod progress;
pub mod report;

//! `paysys-sim history`: the story in simulated time, written as the data feed.
//!
//! Each payment goes, in creation order, through serving's own code ([`Serving`]): the
//! history the API would have sent, the features the engine computes, the rules' decision.
//! An approved payment's planned dispute is recorded if it falls before the end of the
//! simulated period (the feed is a snapshot taken then; later disputes do not exist yet,
//! which is what the training's label-maturity rule is for).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::NaiveDate;
use datafusion::arrow::datatypes::SchemaRef;
use paysys_core::Outcome;
use paysys_feed::key::TokenMaker;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, SeedableRng};
use risk_engine::rules::CompiledRules;

use crate::feed::{DayWriter, FeedRow, TruthWriter};
use crate::serve::Serving;
use crate::story::{Params, Pattern, Story, StoryConfig};
use crate::tracker::{DEFAULT_WINDOW_SECONDS, Seen};

/// Mixed into the seed for the Fernet IVs, so they come from a stream of their own.
const IV_STREAM: u64 = 0x6665_726e_6574_2d69; // "fernet-i"

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Seed of the story: the same seed (and arguments) gives byte-identical files.
    #[arg(long)]
    pub seed: u64,
    /// Payments in the story.
    #[arg(long)]
    pub payments: u64,
    /// Simulated days.
    #[arg(long)]
    pub days: u32,
    /// First simulated day (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub start: NaiveDate,
    /// Folder of the day partitions (must not hold any yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Parquet file of the ground truth (payment_id, is_fraud, pattern).
    #[arg(long)]
    pub truth: PathBuf,
    /// The data feed's Fernet key (as for `paysys-feed export --key-file`).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Risk rules file (YAML or JSON, as RISK_RULES_FILE); the default rule set without it.
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// The API's VELOCITY_WINDOW_SECONDS (also the payee window of the history).
    #[arg(long, env = "VELOCITY_WINDOW_SECONDS", default_value_t = DEFAULT_WINDOW_SECONDS)]
    pub velocity_window_seconds: u64,
}

/// What a history run wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub payments: u64,
    pub by_pattern: BTreeMap<&'static str, u64>,
    pub approved: u64,
    pub declined: u64,
    /// Disputes recorded in the feed.
    pub disputes: u64,
    /// Planned disputes of approved payments that fall after the end of the period.
    pub disputes_after_end: u64,
    pub days: usize,
}

/// Where a history run writes, and with what.
pub struct Output<'a> {
    pub schema: SchemaRef,
    pub out: &'a Path,
    pub truth: &'a Path,
    pub key: &'a str,
}

pub fn run(args: &HistoryArgs) -> anyhow::Result<Summary> {
    let rules = match &args.rules {
        Some(path) => risk_engine::rules::load_file(path)
            .map_err(|e| anyhow::anyhow!("--rules {}: {e}", path.display()))?,
        None => CompiledRules::default(),
    };
    // History is the past: a token stamped in the future (each is stamped with its payment's
    // creation time) is refused by the fernet crate's decrypt until that time comes.
    let end = args.start + chrono::TimeDelta::days(i64::from(args.days));
    anyhow::ensure!(
        end <= chrono::Utc::now().date_naive(),
        "--start {} with --days {} ends on {end}, after today: history mode simulates the past",
        args.start,
        args.days
    );
    let key = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("cannot read the key file {}", args.key_file.display()))?;
    let config = StoryConfig {
        seed: args.seed,
        payments: args.payments,
        start: args.start,
        days: args.days,
        params: Params::default(),
    };
    write(
        &config,
        Serving::new(args.velocity_window_seconds, rules),
        &Output {
            schema: paysys_feed::export::SCHEMA.clone(),
            out: &args.out,
            truth: &args.truth,
            key: &key,
        },
    )
}

/// Generates the story of `config`, serves it and writes the feed and the truth file.
pub fn write(
    config: &StoryConfig,
    mut serving: Serving,
    output: &Output<'_>,
) -> anyhow::Result<Summary> {
    let mut tokens = TokenMaker::new(output.key).context("--key-file")?;
    let mut ivs = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ IV_STREAM);
    let story = Story::generate(config)?;
    let mut days = DayWriter::create(output.out, output.schema.clone())?;
    let mut truth = TruthWriter::create(output.truth)?;
    let mut summary = Summary {
        payments: story.events.len() as u64,
        ..Summary::default()
    };
    let mut user_text = uuid::Uuid::encode_buffer();
    for event in &story.events {
        let user_id = story.user_id(event);
        let seen = Seen {
            user_id,
            payee_id: story.payee_id(event),
            payment_method_id: story.payment_method_id(event),
            money: event.money,
            created_at: event.at,
        };
        let served = serving.serve(event.payment_id, &seen)?;
        *summary
            .by_pattern
            .entry(event.pattern.as_str())
            .or_default() += 1;
        let approved = served.outcome == Outcome::Approved;
        if approved {
            summary.approved += 1;
        } else {
            summary.declined += 1;
        }
        let dispute = event
            .dispute
            .filter(|_| approved)
            .map(|planned| (event.at + planned.after, planned.reason));
        let dispute = match dispute {
            Some((at, _)) if at >= story.end => {
                summary.disputes_after_end += 1;
                None
            }
            other => other,
        };
        summary.disputes += u64::from(dispute.is_some());
        let mut iv = [0u8; 16];
        ivs.fill_bytes(&mut iv);
        let user_text = user_id.hyphenated().encode_lower(&mut user_text);
        let encoded_user_id = tokens
            .encrypt_with_iv(user_text.as_bytes(), event.at.timestamp() as u64, iv)
            .to_vec();
        days.push(FeedRow {
            payment_id: event.payment_id,
            encoded_user_id,
            payee_id: seen.payee_id,
            money: event.money,
            outcome: served.outcome,
            rules_outcome: served.rules_outcome,
            created_at: event.at,
            decided_at: event.at + event.decision_latency,
            features: served.features,
            dispute,
        })?;
        truth.push(event.payment_id, event.pattern)?;
    }
    summary.days = days.finish()?.len();
    truth.finish()?;
    for pattern in Pattern::ALL {
        summary.by_pattern.entry(pattern.as_str()).or_default();
    }
    Ok(summary)
}

/// The summary as printed by the command: one JSON object.
pub fn describe(summary: &Summary) -> String {
    serde_json::json!({
        "payments": summary.payments,
        "patterns": summary.by_pattern,
        "approved": summary.approved,
        "declined": summary.declined,
        "disputes": summary.disputes,
        "disputes_after_end": summary.disputes_after_end,
        "days": summary.days,
    })
    .to_string()
}

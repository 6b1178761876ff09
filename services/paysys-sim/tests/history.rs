//! History mode end to end on small stories: byte-identical for a seed, patterns at their
//! shares, the export's exact schema (today's and the contract's new columns), day
//! partitions, disputes only on approved payments and after them, tokens that decrypt.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use paysys_core::Money;
use paysys_core::features::FEATURE_COUNT;
use paysys_core::risk_rules::RiskRules;
use paysys_sim::feed::{KNOWN_COLUMNS, batch};
use paysys_sim::history::{Output, Summary, write};
use paysys_sim::serve::Serving;
use paysys_sim::story::{Params, Pattern, Story, StoryConfig};
use risk_engine::rules::{CompiledRules, compile};

fn config(seed: u64, payments: u64, days: u32) -> StoryConfig {
    StoryConfig {
        seed,
        payments,
        start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
        days,
        params: Params::default(),
    }
}

/// The export's schema with the columns the contract adds (docs: shared contract of issue
/// 20), for as long as the export on this branch lacks them.
fn contract_schema() -> SchemaRef {
    let utc_us = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let added = [
        Field::new("disputed_at", utc_us, true),
        Field::new("dispute_reason", DataType::Utf8, true),
        Field::new("rules_outcome", DataType::Utf8, true),
        Field::new("features_version", DataType::Utf8, true),
        Field::new(
            "features",
            DataType::List(Arc::new(Field::new("item", DataType::Float64, false))),
            true,
        ),
        Field::new("model_version", DataType::Utf8, true),
        Field::new("model_score", DataType::Float64, true),
        Field::new("model_threshold", DataType::Float64, true),
        Field::new("shadow_model_version", DataType::Utf8, true),
        Field::new("shadow_score", DataType::Float64, true),
    ];
    let export = paysys_feed::export::SCHEMA.clone();
    let mut fields: Vec<Field> = export.fields().iter().map(|f| f.as_ref().clone()).collect();
    for field in added {
        if export.field_with_name(field.name()).is_err() {
            fields.push(field);
        }
    }
    Arc::new(Schema::new(fields))
}

struct Run {
    _dir: tempfile::TempDir,
    out: PathBuf,
    truth: PathBuf,
    key: String,
    summary: Summary,
}

fn run_with(config: &StoryConfig, schema: SchemaRef, rules: CompiledRules, key: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("feed");
    let truth = dir.path().join("truth.parquet");
    let summary = write(
        config,
        Serving::new(3600, rules),
        &Output {
            schema,
            out: &out,
            truth: &truth,
            key,
        },
    )
    .unwrap();
    Run {
        _dir: dir,
        out,
        truth,
        key: key.to_owned(),
        summary,
    }
}

fn run(config: &StoryConfig, schema: SchemaRef) -> Run {
    run_with(
        config,
        schema,
        CompiledRules::default(),
        &paysys_feed::key::generate(),
    )
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every file under `dir`, relative path -> bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(
                    path.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    found
}

fn day_partitions(out: &Path) -> Vec<(NaiveDate, Vec<RecordBatch>)> {
    let mut days: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|name| {
            let day =
                NaiveDate::parse_from_str(name.strip_prefix("day=").unwrap(), "%Y-%m-%d").unwrap();
            (day, read(&out.join(&name).join("payments.parquet")))
        })
        .collect();
    days.sort_by_key(|d| d.0);
    days
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch.column_by_name(name).unwrap().as_string::<i32>();
    (0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i).to_owned()))
        .collect()
}

fn times(batch: &RecordBatch, name: &str) -> Vec<Option<DateTime<Utc>>> {
    let column = batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<TimestampMicrosecondType>();
    (0..column.len())
        .map(|i| {
            column
                .is_valid(i)
                .then(|| DateTime::from_timestamp_micros(column.value(i)).unwrap())
        })
        .collect()
}

fn truth(path: &Path) -> HashMap<String, (bool, String)> {
    let mut map = HashMap::new();
    for batch in read(path) {
        let fraud = batch.column_by_name("is_fraud").unwrap().as_boolean();
        for (i, (id, pattern)) in strings(&batch, "payment_id")
            .into_iter()
            .zip(strings(&batch, "pattern"))
            .enumerate()
        {
            map.insert(id.unwrap(), (fraud.value(i), pattern.unwrap()));
        }
    }
    map
}

#[test]
fn the_same_seed_gives_byte_identical_files_and_another_seed_others() {
    let key = paysys_feed::key::generate();
    let schema = contract_schema();
    let first = run_with(
        &config(7, 3000, 4),
        schema.clone(),
        CompiledRules::default(),
        &key,
    );
    let again = run_with(
        &config(7, 3000, 4),
        schema.clone(),
        CompiledRules::default(),
        &key,
    );
    let other = run_with(&config(8, 3000, 4), schema, CompiledRules::default(), &key);
    let (a, b, c) = (files(&first.out), files(&again.out), files(&other.out));
    assert_eq!(a.len(), 4, "{:?}", a.keys());
    assert!(a == b, "the same seed wrote different feed files");
    assert_eq!(
        std::fs::read(&first.truth).unwrap(),
        std::fs::read(&again.truth).unwrap()
    );
    assert_eq!(first.summary, again.summary);
    assert!(a.keys().eq(c.keys()));
    assert!(a.values().zip(c.values()).all(|(x, y)| x != y));
}

#[test]
fn every_pattern_is_present_at_its_configured_share() {
    let n = 20_000;
    let cfg = config(11, n, 14);
    let story = Story::generate(&cfg).unwrap();
    assert_eq!(story.events.len() as u64, n);
    let mut counts: BTreeMap<Pattern, u64> = BTreeMap::new();
    for e in &story.events {
        *counts.entry(e.pattern).or_default() += 1;
    }
    let params = Params::default();
    for pattern in Pattern::ALL {
        let count = counts.get(&pattern).copied().unwrap_or(0);
        assert_eq!(count, params.count(pattern, n), "{pattern:?}");
        let share = count as f64 / n as f64;
        assert!(
            (share - params.share(pattern)).abs() <= 0.5 / n as f64 + 1e-12,
            "{pattern:?}: {share} vs {}",
            params.share(pattern)
        );
        assert!(count > 0, "{pattern:?} absent");
    }

    // Time order, strictly increasing; inside the period; ids unique.
    assert!(story.events.windows(2).all(|w| w[0].at < w[1].at));
    assert!(story.events.first().unwrap().at >= story.start);
    assert!(story.events.last().unwrap().at < story.end + TimeDelta::seconds(1));
    let ids: HashSet<_> = story.events.iter().map(|e| e.payment_id).collect();
    assert_eq!(ids.len(), story.events.len());

    // Each pattern looks like itself.
    let by = |p: Pattern| story.events.iter().filter(move |e| e.pattern == p);
    let legit_payers: HashSet<u32> = by(Pattern::Legit).map(|e| e.payer).collect();
    let legit_payees: HashSet<u32> = by(Pattern::Legit).map(|e| e.payee).collect();
    let legit_methods: HashSet<u32> = by(Pattern::Legit).map(|e| e.method).collect();
    let usd = |m: Money| m.minor as f64 / 10f64.powi(m.currency.exponent() as i32);
    for e in by(Pattern::CardTesting) {
        assert!(!legit_payers.contains(&e.payer) && !legit_methods.contains(&e.method));
        // At most $3 in any currency (JPY: 150 yen to the dollar).
        let dollars = usd(e.money)
            / paysys_sim::story::CURRENCIES
                .iter()
                .find(|c| c.0 == e.money.currency.code())
                .unwrap()
                .2;
        assert!(dollars <= 3.01, "{dollars}");
    }
    // Bursts: most card-testing payments follow another of the same method within a minute.
    let testing: Vec<_> = by(Pattern::CardTesting).collect();
    let close = testing
        .windows(2)
        .filter(|w| w[0].method == w[1].method && w[1].at - w[0].at <= TimeDelta::seconds(60))
        .count();
    assert!(
        close * 10 >= testing.len() * 7,
        "{close} of {}",
        testing.len()
    );
    for e in by(Pattern::AccountTakeover) {
        assert!(
            legit_payers.contains(&e.payer),
            "a takeover of an existing payer"
        );
        let earlier = by(Pattern::Legit).any(|l| l.payer == e.payer && l.at < e.at);
        assert!(earlier, "the payer had paid before the takeover");
    }
    for e in by(Pattern::Ring) {
        assert!(!legit_payers.contains(&e.payer) && !legit_payees.contains(&e.payee));
    }
    let rings: HashSet<u32> = by(Pattern::Ring).map(|e| e.payee).collect();
    let members: HashSet<u32> = by(Pattern::Ring).map(|e| e.payer).collect();
    assert!(members.len() >= 4 * rings.len(), "rings of several payers");
}

#[test]
fn the_feed_has_exactly_the_exports_schema_today_and_with_the_contract_columns() {
    for name in paysys_feed::export::SCHEMA
        .fields()
        .iter()
        .map(|f| f.name())
    {
        assert!(KNOWN_COLUMNS.contains(&name.as_str()), "{name} unknown");
    }
    for schema in [paysys_feed::export::SCHEMA.clone(), contract_schema()] {
        let run = run(&config(3, 500, 2), schema.clone());
        for (_, batches) in day_partitions(&run.out) {
            for batch in batches {
                assert_eq!(batch.schema(), schema);
            }
        }
    }
    // A column the simulator does not know stops it, naming the column.
    let mut fields: Vec<Field> = contract_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("chargeback_fee", DataType::Int64, true));
    let dir = tempfile::tempdir().unwrap();
    let error = write(
        &config(3, 50, 1),
        Serving::new(3600, CompiledRules::default()),
        &Output {
            schema: Arc::new(Schema::new(fields)),
            out: &dir.path().join("feed"),
            truth: &dir.path().join("truth.parquet"),
            key: &paysys_feed::key::generate(),
        },
    )
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("`chargeback_fee`"),
        "{error:#}"
    );
    // So does a known column of another type.
    let wrong = Arc::new(Schema::new(vec![Field::new(
        "amount_minor",
        DataType::Int32,
        false,
    )]));
    let error = batch(&wrong, &[]).unwrap_err();
    assert!(error.to_string().contains("`amount_minor`"), "{error}");
}

#[test]
fn days_are_partitioned_by_creation_day_and_hold_every_payment_once() {
    let run = run(&config(5, 2000, 3), contract_schema());
    let days = day_partitions(&run.out);
    assert_eq!(
        days.iter().map(|d| d.0.to_string()).collect::<Vec<_>>(),
        ["2026-10-01", "2026-10-02", "2026-10-03"]
    );
    let mut ids = HashSet::new();
    for (day, batches) in &days {
        for batch in batches {
            for created in times(batch, "created_at") {
                assert_eq!(created.unwrap().date_naive(), *day);
            }
            for id in strings(batch, "payment_id") {
                assert!(ids.insert(id.unwrap()));
            }
        }
    }
    assert_eq!(ids.len(), 2000);
    assert_eq!(truth(&run.truth).len(), 2000);
    assert_eq!(run.summary.days, 3);
}

#[test]
fn disputes_only_on_approved_payments_after_them_and_before_the_snapshot() {
    // Rules that decline part of the traffic: amounts above 100 in the payer's currency.
    let rules = compile(&RiskRules {
        version: "test-max-100".into(),
        max_amount: ["USD", "EUR", "GBP"]
            .into_iter()
            .map(|c| (c.to_owned(), "100".to_owned()))
            .chain([("JPY".to_owned(), "15000".to_owned())])
            .collect(),
        ..Default::default()
    })
    .unwrap();
    let key = paysys_feed::key::generate();
    let run = run_with(&config(21, 6000, 30), contract_schema(), rules, &key);
    let truth = truth(&run.truth);
    let end = NaiveDate::from_ymd_opt(2026, 10, 31)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let fernet = paysys_feed::key::parse(&run.key).unwrap();
    let (mut declined, mut fraud_disputes, mut noise_disputes) = (0, 0, 0);
    let mut reasons = HashSet::new();
    for (_, batches) in day_partitions(&run.out) {
        for batch in batches {
            let ids = strings(&batch, "payment_id");
            let outcomes = strings(&batch, "decision_outcome");
            let rules_outcomes = strings(&batch, "rules_outcome");
            let reasons_col = strings(&batch, "dispute_reason");
            let created = times(&batch, "created_at");
            let decided = times(&batch, "decided_at");
            let disputed = times(&batch, "disputed_at");
            let features = batch.column_by_name("features").unwrap().as_list::<i32>();
            let tokens = batch
                .column_by_name("encoded_user_id")
                .unwrap()
                .as_binary::<i32>();
            for i in 0..batch.num_rows() {
                assert_eq!(outcomes[i], rules_outcomes[i], "rules mode");
                assert_eq!(features.value(i).len(), FEATURE_COUNT);
                let token = std::str::from_utf8(tokens.value(i)).unwrap();
                assert_eq!(fernet.decrypt(token).unwrap().len(), 36);
                assert!(decided[i].unwrap() > created[i].unwrap());
                let approved = outcomes[i].as_deref() == Some("approved");
                declined += usize::from(!approved);
                assert_eq!(disputed[i].is_some(), reasons_col[i].is_some());
                let Some(at) = disputed[i] else { continue };
                assert!(approved, "a dispute on a declined payment");
                let after = at - created[i].unwrap();
                assert!(after >= TimeDelta::days(1) && after <= TimeDelta::days(20));
                assert!(at < end, "a dispute after the feed's snapshot");
                let reason = reasons_col[i].clone().unwrap();
                let (is_fraud, _) = &truth[ids[i].as_ref().unwrap()];
                if *is_fraud {
                    fraud_disputes += 1;
                    assert!(["fraudulent", "unrecognized"].contains(&reason.as_str()));
                } else {
                    noise_disputes += 1;
                    assert!(
                        ["product_not_received", "duplicate", "other", "fraudulent"]
                            .contains(&reason.as_str())
                    );
                }
                reasons.insert(reason);
            }
        }
    }
    assert!(declined > 0, "the rules declined nothing");
    assert_eq!(declined as u64, run.summary.declined);
    assert!(fraud_disputes > 0 && noise_disputes > 0);
    assert_eq!(
        (fraud_disputes + noise_disputes) as u64,
        run.summary.disputes
    );
    assert!(
        run.summary.disputes_after_end > 0,
        "late disputes exist and are left out"
    );
    assert!(reasons.len() >= 4, "{reasons:?}");
}

//! `paysys-feed report` on files in the original demo's layout: totals, conversions, user
//! ids, and the failures that must never be silent.

mod common;

use std::path::Path;

use common::{DemoRow, fails_with, feed, ok, write_demo};
use fernet::Fernet;

const RATES: &str = "# the demo's rates, to ILS\ncurrency,rate\nUSD,4.0\nEUR,3.7\n";

struct Files {
    dir: tempfile::TempDir,
    key: String,
}

impl Files {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// The demo's sample plus what its job got wrong: ILS and GBP have no rate in its table, one
/// token was made with another key and one is not a token at all.
fn demo_files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    let key = Fernet::generate_key();
    let fernet = Fernet::new(&key).unwrap();
    let other = Fernet::new(&Fernet::generate_key()).unwrap();
    let token = |name: &str| fernet.encrypt(name.as_bytes()).into_bytes();
    let day = 1_700_000_000_000_000_000i64;
    let rows = |list: &[(&'static str, f64, Vec<u8>)]| -> Vec<DemoRow<'static>> {
        list.iter()
            .enumerate()
            .map(|(i, (currency, amount, token))| DemoRow {
                date_ns: day + i as i64 * 1_000_000_000,
                currency,
                amount: *amount,
                token: token.clone(),
            })
            .collect()
    };
    // Two files in a Hive-style folder, as the export writes them.
    write_demo(
        &dir.path().join("data/day=2023-11-14/a.parquet"),
        &rows(&[
            ("USD", 10.1, token("alice")),
            ("USD", 0.2, token("bob")),
            ("EUR", 12.35, token("carol")),
        ]),
    );
    write_demo(
        &dir.path().join("data/day=2023-11-15/b.parquet"),
        &rows(&[
            ("ILS", 100.0, token("dave")),
            ("GBP", 7.77, other.encrypt(b"eve").into_bytes()),
            ("USD", 0.7, b"not a token".to_vec()),
        ]),
    );
    std::fs::write(dir.path().join("rates.csv"), RATES).unwrap();
    std::fs::write(dir.path().join("key"), format!("{key}\n")).unwrap();
    Files { dir, key }
}

fn report(files: &Files, extra: &[&str]) -> std::process::Output {
    let data = files.path("data");
    let rates = files.path("rates.csv");
    let mut args = vec!["report", &data, "--rates", &rates, "--to", "ILS"];
    args.extend_from_slice(extra);
    feed(&args, &[])
}

fn summary(out: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(out).join("summary.json")).unwrap())
        .unwrap()
}

#[tokio::test]
async fn totals_are_exact_and_currencies_without_a_rate_are_listed() {
    let files = demo_files();
    let out = files.path("out");
    let key = files.path("key");
    ok(report(
        &files,
        &["--key-file", &key, "--format", "json", "--out", &out],
    ));
    let s = summary(&out);
    assert_eq!(s["payments"], 6);
    // 10.1 + 0.2 + 0.7 = 11.00 exactly (floating point gives 10.999999999999998).
    let totals: Vec<(String, String, Option<String>)> = s["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["currency"].as_str().unwrap().to_owned(),
                t["total"].as_str().unwrap().to_owned(),
                t["converted"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        totals,
        [
            ("EUR".into(), "12.35".into(), some("45.70")),
            ("GBP".into(), "7.77".into(), None),
            ("ILS".into(), "100.00".into(), some("100.00")),
            ("USD".into(), "11.00".into(), some("44.00")),
        ]
    );
    assert_eq!(s["converted_total"], "189.70");
    assert_eq!(s["reporting_currency"], "ILS");
    assert_eq!(s["currencies_without_rate"], serde_json::json!(["GBP"]));
    // Two tokens do not decrypt; their rows are kept.
    assert_eq!(s["undecryptable_tokens"], 2);

    let payments: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&out).join("payments.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(payments.len(), 6);
    let carol = payments.iter().find(|p| p["user_id"] == "carol").unwrap();
    assert_eq!(carol["amount"], "12.35");
    assert_eq!(carol["amount_in_ils"], "45.70");
    assert_eq!(carol["amount_in_ils_minor"], 4570);
    let gbp = payments.iter().find(|p| p["currency"] == "GBP").unwrap();
    assert!(gbp.get("user_id").is_none_or(|v| v.is_null()), "{gbp}");
    assert!(
        gbp.get("amount_in_ils").is_none_or(|v| v.is_null()),
        "{gbp}"
    );
    let totals_json = std::fs::read_to_string(Path::new(&out).join("totals.json")).unwrap();
    assert!(totals_json.contains("no rate"), "{totals_json}");
}

#[tokio::test]
async fn every_format_writes_every_output() {
    let files = demo_files();
    for format in ["csv", "json", "parquet"] {
        let out = files.path(&format!("out-{format}"));
        ok(report(&files, &["--format", format, "--out", &out]));
        for name in ["totals", "payments"] {
            let path = Path::new(&out).join(format!("{name}.{format}"));
            assert!(
                std::fs::metadata(&path).unwrap().len() > 0,
                "{}",
                path.display()
            );
        }
        // Without a key the user ids are neither shown nor counted.
        assert!(summary(&out)["undecryptable_tokens"].is_null());
    }
    let csv =
        std::fs::read_to_string(Path::new(&files.path("out-csv")).join("totals.csv")).unwrap();
    assert!(
        csv.starts_with(
            "currency,payments,total,total_minor,rate,converted,converted_minor,note\n"
        ),
        "{csv}"
    );
    assert!(csv.contains("USD,3,11.00,1100,4,44.00,4400,\n"), "{csv}");

    // The default: tables on the terminal.
    let table = ok(report(&files, &["--limit", "2"]));
    assert!(table.contains("| USD      | 3        | 11.00"), "{table}");
    assert!(table.contains("no rate"), "{table}");
}

#[tokio::test]
async fn a_key_from_the_environment_decrypts_too() {
    let files = demo_files();
    let out = files.path("out");
    let data = files.path("data");
    ok(feed(
        &["report", &data, "--format", "csv", "--out", &out],
        &[("PAYSYS_FEED_KEY", &files.key)],
    ));
    let payments = std::fs::read_to_string(Path::new(&out).join("payments.csv")).unwrap();
    assert!(
        payments.contains(",alice\n") && payments.contains(",dave\n"),
        "{payments}"
    );
    assert_eq!(summary(&out)["undecryptable_tokens"], 2);
}

#[tokio::test]
async fn bad_input_fails_clearly_and_never_panics() {
    let files = demo_files();
    let data = files.path("data");
    let out = files.path("out");

    // A well-formed key that decrypts nothing: the wrong key.
    let wrong = files.path("wrong-key");
    std::fs::write(&wrong, Fernet::generate_key()).unwrap();
    fails_with(
        feed(&["report", &data, "--key-file", &wrong], &[]),
        "wrong key?",
    );
    let malformed = files.path("malformed-key");
    std::fs::write(&malformed, "password").unwrap();
    fails_with(
        feed(&["report", &data, "--key-file", &malformed], &[]),
        "not a Fernet key",
    );
    fails_with(
        feed(
            &["report", &data, "--key-file", &files.path("no-such-key")],
            &[],
        ),
        "cannot read the key file",
    );

    fails_with(
        feed(&["report", &files.path("missing.parquet")], &[]),
        "cannot read input",
    );
    let empty = files.path("empty");
    std::fs::create_dir(&empty).unwrap();
    fails_with(feed(&["report", &empty], &[]), "no .parquet files");
    let garbage = files.path("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not parquet").unwrap();
    fails_with(
        feed(&["report", &garbage], &[]),
        "is not a readable Parquet file",
    );
    let truncated = files.path("truncated.parquet");
    let whole = std::fs::read(files.dir.path().join("data/day=2023-11-14/a.parquet")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    fails_with(
        feed(&["report", &truncated], &[]),
        "is not a readable Parquet file",
    );

    // A Parquet file of something else.
    let other = files.path("other.parquet");
    let schema = std::sync::Arc::new(datafusion::arrow::datatypes::Schema::new(vec![
        datafusion::arrow::datatypes::Field::new(
            "x",
            datafusion::arrow::datatypes::DataType::Int64,
            false,
        ),
    ]));
    let writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&other).unwrap(),
        schema,
        None,
    )
    .unwrap();
    writer.close().unwrap();
    fails_with(
        feed(&["report", &other], &[]),
        "missing or mistyped column(s): date, currency",
    );

    let rates = files.path("bad-rates.csv");
    std::fs::write(&rates, "currency,rate\nUSD,lots\n").unwrap();
    fails_with(
        feed(&["report", &data, "--rates", &rates, "--to", "ILS"], &[]),
        "line 2: 'USD,lots': 'lots' is not a decimal number",
    );
    fails_with(
        feed(
            &[
                "report",
                &data,
                "--rates",
                &files.path("none.csv"),
                "--to",
                "ILS",
            ],
            &[],
        ),
        "cannot read the rates file",
    );
    fails_with(
        feed(&["report", &data, "--format", "csv"], &[]),
        "needs --out",
    );
    assert!(
        !Path::new(&out).exists(),
        "nothing written by a failed report"
    );
}

/// A file made by Python the demo's way (pyarrow, `cryptography.fernet` tokens, its own key)
/// is read and decrypted here.
#[tokio::test]
async fn tokens_and_files_made_by_python_are_read_and_decrypted() {
    let Some(python) = common::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    let file = dir.path().join("demo.parquet");
    common::run_python(
        &python,
        "import sys, datetime, pyarrow as pa, pyarrow.parquet as pq\n\
         from cryptography.fernet import Fernet\n\
         key = Fernet.generate_key()\n\
         open(sys.argv[1], 'wb').write(key)\n\
         f = Fernet(key)\n\
         t0 = datetime.datetime(2023, 1, 1)\n\
         names = ['Alice', 'Bob', 'Zoë']\n\
         pq.write_table(pa.table({\n\
         \x20   'date': pa.array([t0 + datetime.timedelta(hours=i) for i in range(3)], pa.timestamp('ns')),\n\
         \x20   'currency': ['USD', 'EUR', 'USD'],\n\
         \x20   'amount': [10.5, 3.25, 1.0],\n\
         \x20   'encoded_user_id': [f.encrypt(n.encode()) for n in names],\n\
         }), sys.argv[2])\n",
        &[key.to_str().unwrap(), file.to_str().unwrap()],
    );
    let out = dir.path().join("out");
    ok(feed(
        &[
            "report",
            file.to_str().unwrap(),
            "--key-file",
            key.to_str().unwrap(),
            "--format",
            "csv",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    ));
    let payments = std::fs::read_to_string(out.join("payments.csv")).unwrap();
    let mut users: Vec<&str> = payments
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["Alice", "Bob", "Zoë"], "{payments}");
    assert_eq!(summary(out.to_str().unwrap())["undecryptable_tokens"], 0);
}

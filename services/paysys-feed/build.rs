// The tests embed the payments API's migrations (`sqlx::migrate!` in tests/common), which
// cargo does not know to watch: without this, a changed migration is not compiled in.
fn main() {
    println!("cargo:rerun-if-changed=../payments-api/migrations");
}

// `sqlx::migrate!` embeds the migrations at compile time, but cargo does not know it reads
// them: without this, a changed migration is not compiled in until some Rust file changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

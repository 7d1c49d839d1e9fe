// `sqlx::migrate!()` embeds `migrations/` at compile time, but Cargo does not know that: without
// this, a migration added to a built tree was left out of the binary until some other change.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

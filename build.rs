//! `sqlx::migrate!` embeds `migrations/` when the crate compiles: a new migration file must
//! trigger a rebuild even when no source file changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

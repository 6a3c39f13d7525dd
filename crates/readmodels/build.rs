// sqlx::migrate! embeds the migrations at compile time; without this, a migration file
// added to the folder would not rebuild the crate (cargo tracks only the files read).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

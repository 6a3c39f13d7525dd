//! `cargo bench -p cornershop-bench -- COMMAND [OPTIONS]`: see the crate's documentation
//! and bench/run.sh, which runs every benchmark and writes the table.

fn main() -> anyhow::Result<()> {
    cornershop_bench::main()
}

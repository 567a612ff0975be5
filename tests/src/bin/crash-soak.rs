//! Long crash soak: the suite's crash test with as many SIGKILLs as asked.
//!
//! Usage: crash-soak [--kills N] [--seed S] [--dir PATH]
//! Build first (`cargo build --release -p tests`); it runs `crash-child` from its own directory.

use anyhow::{Context, Result, bail};

#[tokio::main]
async fn main() -> Result<()> {
    let mut kills = 200u32;
    let mut seed = engine::actor::wall_clock_ms();
    let mut dir: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--kills" => kills = value.parse()?,
            "--seed" => seed = value.parse()?,
            "--dir" => dir = Some(value.into()),
            other => bail!(
                "unknown option {other}; usage: crash-soak [--kills N] [--seed S] [--dir PATH]"
            ),
        }
    }
    let child = std::env::current_exe()?.with_file_name("crash-child");
    let temp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
    println!(
        "crash soak: {kills} kills, seed {seed}, data in {}",
        dir.display()
    );
    let report = tests::crash::run(&child, &dir, kills, seed).await?;
    println!("{report:#?}");
    println!(
        "crash soak passed: every acknowledged change survived {} kills",
        report.kills
    );
    Ok(())
}

//! The storage-fault simulation for as long as asked: runs of `--steps` steps on seeds `--seed`,
//! `--seed + 1`, ... until `--runs` runs or `--seconds` seconds, whichever comes first, with a
//! progress line every 10 s. A failure prints its seed and step and how to replay it.
//!
//! Usage: storage-sim [--seconds S] [--runs N] [--steps N] [--seed S] [--verbose]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const USAGE: &str =
    "usage: storage-sim [--seconds S] [--runs N] [--steps N] [--seed S] [--verbose]";

fn main() -> Result<()> {
    let mut seconds: Option<u64> = None;
    let mut runs: Option<u64> = None;
    let mut steps = 2_000u64;
    let mut seed = engine::actor::wall_clock_ms();
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--verbose" {
            verbose = true;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value; {USAGE}"))?;
        match arg.as_str() {
            "--seconds" => seconds = Some(value.parse()?),
            "--runs" => runs = Some(value.parse()?),
            "--steps" => steps = value.parse()?,
            "--seed" => seed = value.parse()?,
            other => bail!("unknown option {other}; {USAGE}"),
        }
    }
    let (runs, seconds) = match (runs, seconds) {
        (None, None) => (u64::MAX, Some(60)),
        (runs, seconds) => (runs.unwrap_or(u64::MAX), seconds),
    };
    tests::sim::report_panics();
    let started = Instant::now();
    let deadline = seconds.map(|s| started + Duration::from_secs(s));
    println!(
        "storage simulation: seeds from {seed}, {steps} steps a run, {}",
        match seconds {
            Some(s) => format!("for {s} s"),
            None => format!("{runs} runs"),
        }
    );
    let mut last_line = Instant::now();
    let outcome = tests::sim::run_many(seed, runs, steps, deadline, verbose, |at, total| {
        if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            println!("[{:>5} s] seed {at}: {total}", started.elapsed().as_secs());
        }
    });
    match outcome {
        Ok(total) => {
            let runs_done = total.steps / steps.max(1);
            println!(
                "storage simulation passed: {runs_done} runs (seeds {seed}..{}) in {:.0} s: {total}",
                seed.wrapping_add(runs_done),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(1);
        }
    }
}

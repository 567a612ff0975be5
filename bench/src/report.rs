//! Writes runs out: a JSON report (the figures, the audit, the scenario and the machine), a
//! self-contained HTML report that draws its charts offline from the same JSON, and the text summary
//! on the terminal. `boxoffice-bench report` puts several JSON reports side by side in one page.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::results::{ReportFile, RunReport};

const TEMPLATE: &str = include_str!("report.html");
const DATA_MARK: &str = "__BOXOFFICE_REPORT_DATA__";

#[derive(clap::Args)]
pub struct ReportArgs {
    /// JSON reports written by `run --json`.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Where to write the HTML page with all their runs side by side.
    #[arg(long)]
    html: PathBuf,
}

pub fn write_json(path: &Path, file: &ReportFile) -> Result<()> {
    let text = serde_json::to_string_pretty(file)?;
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

pub fn read_json(path: &Path) -> Result<ReportFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a boxoffice-bench report", path.display()))
}

/// The HTML page for these reports: no network needed to open it.
pub fn html(files: &[ReportFile]) -> Result<String> {
    // Inside a <script> element, `</` could end it early; JSON allows `<\/` for it.
    let data = serde_json::to_string(files)?.replace("</", "<\\/");
    Ok(TEMPLATE.replace(DATA_MARK, &data))
}

pub fn write_html(path: &Path, files: &[ReportFile]) -> Result<()> {
    std::fs::write(path, html(files)?).with_context(|| format!("write {}", path.display()))
}

pub fn report(args: ReportArgs) -> Result<()> {
    let files = args
        .inputs
        .iter()
        .map(|p| read_json(p))
        .collect::<Result<Vec<_>>>()?;
    write_html(&args.html, &files)?;
    let runs: usize = files.iter().map(|f| f.runs.len()).sum();
    println!(
        "wrote {} ({runs} runs from {} reports)",
        args.html.display(),
        files.len()
    );
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}

/// The run's figures as a few lines for the terminal.
pub fn print_run(run: &RunReport) {
    println!(
        "== {} · scenario {} · {:.1} s measured",
        run.target, run.scenario.name, run.measured_seconds
    );
    for (name, op) in &run.ops {
        let l = &op.latency_us;
        println!(
            "   {name:<12} {:>10.0} ok/s {:>10.0} answers/s   p50 {} p90 {} p99 {} p99.9 {} max {} ms",
            op.ok_per_second,
            op.per_second,
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
    }
    let o = &run.outcomes;
    println!(
        "   reservations: {} held, {} sold out, {} overloaded, {} other refusals, {} errors",
        o.held, o.sold_out, o.overloaded, o.other_refusals, o.errors
    );
    if let Some(s) = run.sold_out_after_seconds {
        println!("   sold out after {s:.2} s (from the start, warm-up included)");
    }
    if run.watch_updates > 0 {
        println!("   watch updates pushed: {}", run.watch_updates);
    }
    for note in &run.notes {
        println!("   note: {note}");
    }
    if !run.audit.applicable {
        println!("   audit: not applicable (the target keeps no state)");
        return;
    }
    println!(
        "   audit: {} ({} holds recycled by expiry{})",
        if run.audit.passed { "passed" } else { "FAILED" },
        run.audit.holds_recycled_by_expiry,
        if run.audit.waited_seconds > 0.0 {
            format!(", waited {:.1} s for expiries", run.audit.waited_seconds)
        } else {
            String::new()
        }
    );
    for check in &run.audit.checks {
        println!(
            "     {} {}: {}",
            if check.passed { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        );
    }
}

/// Ratios between runs of one invocation: against the no-op server in the same mode and against
/// the baselines.
pub fn print_comparisons(runs: &[RunReport]) {
    let held = |r: &RunReport| r.ops.get("reserve").map_or(0.0, |o| o.ok_per_second);
    let answers = |r: &RunReport| r.ops.get("reserve").map_or(0.0, |o| o.per_second);
    let p99 = |r: &RunReport| r.ops.get("reserve").map_or(0, |o| o.latency_us.p99);
    let find = |prefix: &str, mode: Option<&str>| {
        runs.iter().find(|r| {
            r.target.starts_with(prefix)
                && mode.is_none_or(|m| r.target.ends_with(&format!("({m})")))
        })
    };
    let mut lines = Vec::new();
    for run in runs.iter().filter(|r| r.target.starts_with("boxoffice")) {
        let mode = if run.target.ends_with("(stream)") {
            "stream"
        } else {
            "unary"
        };
        // Against the transport's ceiling: answers per second, as the no-op server answers
        // every request with a hold (the `throughput` scenario makes every answer a hold).
        if let Some(noop) = find("noop", Some(mode)).filter(|n| answers(n) > 0.0)
            && run.target.contains("gRPC")
        {
            lines.push(format!(
                "{}: {:.1}% of the no-op server's answers per second ({mode})",
                run.target,
                100.0 * answers(run) / answers(noop)
            ));
        }
        for baseline in ["PostgreSQL", "Redis"] {
            if let Some(b) = find(baseline, None).filter(|b| held(b) > 0.0) {
                lines.push(format!(
                    "{}: {:.1}x {} (p99 {} ms vs {} ms)",
                    run.target,
                    held(run) / held(b),
                    b.target,
                    ms(p99(run)),
                    ms(p99(b))
                ));
            }
        }
    }
    if !lines.is_empty() {
        println!("== side by side (reservations held per second)");
        for line in lines {
            println!("   {line}");
        }
    }
}

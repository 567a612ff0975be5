//! `boxoffice-bench render`: ticket PDFs rendered per second by the ticket-file adapter's renderer
//! (`adapters::tickets::render`), on as many threads as the adapter's `--max-parallel-renders`,
//! with tokens as long as real ones. Every file is checked to be a PDF of one page per ticket, and
//! two renders of one order must give the same bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use adapters::tickets::render::{Paper, TicketDocument, TicketPage, render};
use anyhow::{Result, ensure};

use crate::in_process::machine;

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Orders to render.
    #[arg(long, default_value_t = 500)]
    orders: u32,
    /// Tickets per order (pages per file).
    #[arg(long, default_value_t = 4)]
    tickets_per_order: u32,
    /// Render threads (the adapter's --max-parallel-renders).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Paper: a4 or letter.
    #[arg(long, default_value = "a4")]
    paper: String,
}

pub(crate) fn document(n: u32, tickets: u32, paper: Paper) -> TicketDocument {
    // A general-admission token is about 150 characters, a seated one about 170 (docs/tickets.md);
    // these are 200, so the QR codes are at least as dense as real ones.
    let token = |t: u32| {
        let mut token = format!("AQAAAAEB{n:08x}{t:08x}");
        while token.len() < 200 {
            token.push_str("x-9_Zq");
        }
        token.truncate(200);
        token
    };
    TicketDocument {
        event_name: "Noite de Fado — São Jorge".into(),
        venue: "Coliseu dos Recreios, Lisboa".into(),
        starts_at_ms: 1_797_105_600_000,
        time_zone: "Europe/Lisbon".into(),
        holder: format!("Joana Gonçalves Ñúñez {n}"),
        order_id: format!("0197f5d2-8c1e-7a3b-9e44-{n:012x}"),
        currency: "EUR".into(),
        tickets: (0..tickets)
            .map(|t| TicketPage {
                ticket_id: format!(
                    "0197f5d2-8c1f-7c20-8d11-{:012x}",
                    u64::from(n) * 1_000 + u64::from(t)
                ),
                tier_name: "Plateia".into(),
                seat: (t % 2 == 0).then(|| ("A".into(), "F".into(), (t + 1).to_string())),
                price_minor: 4_250,
                token: token(t),
            })
            .collect(),
        paper,
    }
}

pub fn render_bench(args: RenderArgs) -> Result<()> {
    ensure!(
        args.orders >= 1 && args.tickets_per_order >= 1 && args.threads >= 1,
        "--orders, --tickets-per-order and --threads must be at least 1"
    );
    let paper = match args.paper.as_str() {
        "a4" => Paper::A4,
        "letter" => Paper::Letter,
        other => anyhow::bail!("--paper `{other}` is not a4 or letter"),
    };
    // The font is parsed once per process, on first use: not part of the figures.
    let warm = render(&document(u32::MAX, 1, paper))?;
    ensure!(
        warm == render(&document(u32::MAX, 1, paper))?,
        "two renders of one order differ"
    );
    let next = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..args.threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= args.orders as usize {
                            return Ok(());
                        }
                        let doc = document(n as u32, args.tickets_per_order, paper);
                        let pdf = render(&doc)?;
                        ensure!(pdf.starts_with(b"%PDF-"), "order {n}: not a PDF");
                        let pages = pdf
                            .windows(12)
                            .filter(|w| &w[..11] == b"/Type /Page" && w[11] != b's')
                            .count();
                        ensure!(
                            pages == args.tickets_per_order as usize,
                            "order {n}: {pages} pages for {} tickets",
                            args.tickets_per_order
                        );
                        bytes.fetch_add(pdf.len(), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("a render thread panicked")?;
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let tickets = f64::from(args.orders) * f64::from(args.tickets_per_order);
    println!("machine: {}", machine());
    println!(
        "rendered {} orders x {} tickets on {} threads in {seconds:.2} s: {:.0} tickets/s, {:.0} orders/s, {:.1} KB per order",
        args.orders,
        args.tickets_per_order,
        args.threads,
        tickets / seconds,
        f64::from(args.orders) / seconds,
        bytes.load(Ordering::Relaxed) as f64 / f64::from(args.orders) / 1_000.0
    );
    Ok(())
}

//! Tests of the ticket renderer: real PDFs read back with poppler and zbar (what is printed, that
//! each code scans to its token, paper sizes, same document same bytes), time and price formats,
//! the mask choice against the `qrcode` crate, refusals and fitting. They never touch the network.

use std::path::Path;
use std::process::Command;

use qrcode::{Color, EcLevel};

use super::fonts::{Weight, fonts};
use super::layout::{MARGIN_MM, PageLayout, TITLE_MIN_PT, mm};
use super::qr::QrMatrix;
use super::*;

/// 2026-07-18T19:30:00Z: 20:30 in Lisbon, summer time.
const JULY_EVENING_MS: i64 = 1_784_403_000_000;
const HOLDER: &str = "Joana Gonçalves Ñúñez";

/// A token-shaped base64url string (only its shape matters here, not its signature).
fn token(seed: u64, chars: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = seed;
    (0..chars)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(ALPHABET[(state >> 58) as usize])
        })
        .collect()
}

fn order() -> TicketDocument {
    TicketDocument {
        event_name: "Fado à Noite: Carminho & Convidados".into(),
        venue: "Coliseu dos Recreios, Lisboa".into(),
        starts_at_ms: JULY_EVENING_MS,
        time_zone: "Europe/Lisbon".into(),
        holder: HOLDER.into(),
        order_id: "0197f5d2-8c1e-7a3b-9e44-2b7c1d9f0a61".into(),
        currency: "EUR".into(),
        tickets: vec![
            TicketPage {
                ticket_id: "0197f5d2-8c1f-7c20-8d11-000000000001".into(),
                tier_name: "Plateia".into(),
                seat: Some(("101".into(), "F".into(), "12".into())),
                price_minor: 1_250,
                token: token(1, 250),
            },
            TicketPage {
                ticket_id: "0197f5d2-8c1f-7c20-8d11-000000000002".into(),
                tier_name: "Pé (standing)".into(),
                seat: None,
                price_minor: 900,
                token: token(2, 150),
            },
            TicketPage {
                ticket_id: "0197f5d2-8c1f-7c20-8d11-000000000003".into(),
                tier_name: "Plateia".into(),
                seat: Some(("101".into(), "F".into(), "13".into())),
                price_minor: 1_250,
                token: token(3, 200),
            },
        ],
        paper: Paper::A4,
    }
}

/// Runs a Debian tool the test depends on, failing with what to install if it is missing.
fn run(program: &str, package: &str, args: &[&str]) -> String {
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: this test needs the Debian package {package} \
             (scripts/setup.sh installs it)"
        ),
        Err(e) => panic!("{program}: {e}"),
    };
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("tool output is UTF-8")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn every_page_prints_its_ticket_and_a_code_that_scans_to_its_token() {
    let doc = order();
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("order.pdf");
    std::fs::write(&file, render(&doc).expect("renders")).expect("write the pdf");

    let info = run("pdfinfo", "poppler-utils", &[path(&file)]);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().eq(["Pages:", "3"])),
        "one page per ticket:\n{info}"
    );
    let fonts = run("pdffonts", "poppler-utils", &[path(&file)]);
    assert!(
        fonts.contains("DejaVuSans") && !fonts.contains(" no "),
        "fonts embedded, subset and with a unicode map:\n{fonts}"
    );

    for (index, ticket) in doc.tickets.iter().enumerate() {
        let page = (index + 1).to_string();
        let text = run(
            "pdftotext",
            "poppler-utils",
            &["-f", &page, "-l", &page, "-enc", "UTF-8", path(&file), "-"],
        );
        let seat = match &ticket.seat {
            Some((section, row, number)) => {
                format!("Section {section} · Row {row} · Seat {number}")
            }
            None => "General admission".to_string(),
        };
        let price = if ticket.price_minor == 1_250 {
            "EUR 12.50"
        } else {
            "EUR 9.00"
        };
        for expected in [
            HOLDER,
            "Fado à Noite: Carminho &",
            "Coliseu dos Recreios, Lisboa",
            "Saturday 18 July 2026",
            "20:30 WEST (UTC+01:00)",
            ticket.tier_name.as_str(),
            seat.as_str(),
            price,
            doc.order_id.as_str(),
            ticket.ticket_id.as_str(),
            &format!("Ticket {page} of 3"),
        ] {
            assert!(
                text.contains(expected),
                "page {page} lacks {expected:?}:\n{text}"
            );
        }

        let image = dir.path().join(format!("page-{page}"));
        run(
            "pdftoppm",
            "poppler-utils",
            &[
                "-r",
                "150",
                "-png",
                "-f",
                &page,
                "-l",
                &page,
                "-singlefile",
                path(&file),
                path(&image),
            ],
        );
        let png = image.with_extension("png");
        let decoded = run("zbarimg", "zbar-tools", &["--raw", "-q", path(&png)]);
        assert_eq!(
            decoded.lines().collect::<Vec<_>>(),
            [ticket.token.as_str()],
            "page {page}'s code holds exactly its ticket's token"
        );
    }
}

#[test]
fn the_same_document_renders_to_the_same_bytes() {
    let first = render(&order()).expect("renders");
    let second = render(&order().clone()).expect("renders");
    assert!(first == second, "two renders of one order differ");
    // The file identifier comes from the order, so another order is another file.
    let mut other = order();
    other.order_id = "0197f5d2-8c1e-7a3b-9e44-2b7c1d9f0a62".into();
    assert_ne!(first, render(&other).expect("renders"));
}

#[test]
fn a4_by_default_letter_by_option() {
    assert_eq!(Paper::default(), Paper::A4);
    let dir = tempfile::tempdir().expect("temporary directory");
    for (paper, size) in [
        (Paper::A4, "595.276 x 841.89 pts (A4)"),
        (Paper::Letter, "612 x 792 pts (letter)"),
    ] {
        let file = dir.path().join(format!("{paper:?}.pdf"));
        let doc = TicketDocument { paper, ..order() };
        std::fs::write(&file, render(&doc).expect("renders")).expect("write the pdf");
        let info = run("pdfinfo", "poppler-utils", &[path(&file)]);
        assert!(
            info.lines()
                .any(|l| l.starts_with("Page size:") && l.ends_with(size)),
            "{paper:?} is {size}:\n{info}"
        );
    }
}

#[test]
fn an_unknown_time_zone_is_refused() {
    let doc = TicketDocument {
        time_zone: "Mars/Olympus_Mons".into(),
        ..order()
    };
    assert_eq!(
        render(&doc),
        Err(RenderError::UnknownTimeZone("Mars/Olympus_Mons".into()))
    );
}

#[test]
fn start_times_print_in_the_event_zone_with_its_abbreviation_or_offset() {
    // 2026-01-10T21:00:00Z, winter in the north.
    const JANUARY_NIGHT_MS: i64 = 1_768_078_800_000;
    for (ms, zone, date, time) in [
        (
            JULY_EVENING_MS,
            "Europe/Lisbon",
            "Saturday 18 July 2026",
            "20:30 WEST (UTC+01:00)",
        ),
        (
            JANUARY_NIGHT_MS,
            "Europe/Lisbon",
            "Saturday 10 January 2026",
            "21:00 WET (UTC+00:00)",
        ),
        (JULY_EVENING_MS, "", "Saturday 18 July 2026", "19:30 UTC"),
        (
            JULY_EVENING_MS,
            "Asia/Kolkata",
            "Sunday 19 July 2026",
            "01:00 IST (UTC+05:30)",
        ),
        (
            JANUARY_NIGHT_MS,
            "America/Sao_Paulo",
            "Saturday 10 January 2026",
            "18:00 UTC-03:00",
        ),
        (
            JANUARY_NIGHT_MS,
            "America/New_York",
            "Saturday 10 January 2026",
            "16:00 EST (UTC-05:00)",
        ),
    ] {
        assert_eq!(
            local_start(ms, zone),
            Ok(LocalStart {
                date: date.into(),
                time: time.into()
            }),
            "{zone}"
        );
    }
    assert_eq!(
        local_start(i64::MAX, "UTC"),
        Err(RenderError::StartOutOfRange(i64::MAX))
    );
}

#[test]
fn prices_use_the_currency_minor_unit_exponent() {
    for (currency, minor, printed) in [
        ("EUR", 1_250, "EUR 12.50"),
        ("eur", 5, "EUR 0.05"),
        ("EUR", 0, "EUR 0.00"),
        ("USD", 123_456_789, "USD 1,234,567.89"),
        ("JPY", 12_000, "JPY 12,000"),
        ("KRW", 999, "KRW 999"),
        ("BHD", 12_345, "BHD 12.345"),
        ("CLF", 10_001, "CLF 1.0001"),
        ("XXX", 100, "XXX 1.00"),
        ("EUR", u64::MAX, "EUR 184,467,440,737,095,516.15"),
    ] {
        let code = currency_code(currency).expect("a currency code");
        assert_eq!(format_price(&code, minor), printed);
    }
    for bad in ["", "EU", "EURO", "E1R", "€UR"] {
        assert_eq!(
            currency_code(bad),
            Err(RenderError::InvalidCurrency(bad.into()))
        );
    }
}

#[test]
fn the_fast_mask_choice_is_the_qrcode_crates_choice() {
    for chars in (1..=300)
        .step_by(7)
        .chain([150, 200, 250, 1_000, 1_400, 2_000])
    {
        let token = token(chars as u64, chars);
        let ours = QrMatrix::encode(token.as_bytes()).expect("encodes");
        let reference =
            qrcode::QrCode::with_error_correction_level(&token, EcLevel::M).expect("encodes");
        assert_eq!(ours.width, reference.width(), "{chars} characters");
        let dark: Vec<bool> = reference
            .to_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        assert!(ours.dark == dark, "{chars} characters: another mask");
    }
}

#[test]
fn what_cannot_be_printed_is_refused_with_the_reason() {
    let no_tickets = TicketDocument {
        tickets: Vec::new(),
        ..order()
    };
    assert_eq!(render(&no_tickets), Err(RenderError::NoTickets));

    let mut too_many = order();
    too_many.tickets = vec![too_many.tickets[0].clone(); MAX_TICKETS_PER_DOCUMENT + 1];
    assert_eq!(
        render(&too_many),
        Err(RenderError::TooManyTickets {
            count: MAX_TICKETS_PER_DOCUMENT + 1,
            max: MAX_TICKETS_PER_DOCUMENT
        })
    );

    let long_holder = TicketDocument {
        holder: "x".repeat(MAX_FIELD_BYTES + 1),
        ..order()
    };
    assert_eq!(
        render(&long_holder),
        Err(RenderError::FieldTooLong {
            field: "holder",
            bytes: MAX_FIELD_BYTES + 1,
            max: MAX_FIELD_BYTES
        })
    );

    let mut empty_token = order();
    empty_token.tickets[1].token.clear();
    assert_eq!(
        render(&empty_token),
        Err(RenderError::EmptyToken {
            ticket_id: empty_token.tickets[1].ticket_id.clone()
        })
    );

    // Version 40 at M holds 2,331 bytes.
    let mut huge_token = order();
    huge_token.tickets[0].token = token(9, 3_000);
    assert!(matches!(
        render(&huge_token),
        Err(RenderError::TokenNotEncodable { .. })
    ));

    let bad_currency = TicketDocument {
        currency: "EURO".into(),
        ..order()
    };
    assert_eq!(
        render(&bad_currency),
        Err(RenderError::InvalidCurrency("EURO".into()))
    );
    assert_eq!(
        RenderError::UnknownTimeZone("Mars/Olympus_Mons".into()).to_string(),
        "unknown time zone \"Mars/Olympus_Mons\""
    );
}

#[test]
fn long_or_unusual_text_is_fitted_inside_the_frame() {
    let longest = "Grande Concerto de Ano Novo ".repeat(150);
    let mut doc = order();
    doc.event_name = longest[..MAX_FIELD_BYTES].to_string();
    doc.venue = "V".repeat(MAX_FIELD_BYTES);
    doc.holder = "Ōsaka 大阪 \u{1F3AB} tab\there\nnewline".into();
    doc.tickets[0].seat = Some(("S".repeat(200), "R".repeat(200), "N".repeat(200)));
    let fonts = fonts().expect("fonts");
    let (width, height) = Paper::A4.size_pt();
    let starts = local_start(doc.starts_at_ms, &doc.time_zone).expect("a start");
    let qr = QrMatrix::encode(doc.tickets[0].token.as_bytes()).expect("a code");
    let mut page = PageLayout::new(fonts, width, height);
    page.ticket(&doc, &doc.tickets[0], &starts, *b"EUR", &qr, 1, 1);
    let (left, right) = (mm(MARGIN_MM), width - mm(MARGIN_MM));
    for run in &page.texts {
        let font = fonts.get(run.weight);
        let extent = run.x
            + font.width(&run.text, run.size)
            + run.tracking * run.text.chars().count() as f32;
        assert!(
            run.x >= left && extent <= right + 0.01,
            "{:?} runs from {} to {extent}, outside {left}..{right}",
            run.text,
            run.x
        );
        assert!(
            run.y > 0.0 && run.y < height,
            "{:?} is off the page",
            run.text
        );
        assert!(!run.text.contains(['\t', '\n']), "{:?}", run.text);
    }
    let title: Vec<&str> = page
        .texts
        .iter()
        .filter(|r| r.weight == Weight::Bold && r.size >= TITLE_MIN_PT)
        .map(|r| r.text.as_str())
        .collect();
    assert!(
        title.len() == 2 && title[0].starts_with("Grande Concerto") && title[1].ends_with('…'),
        "a title too long for two lines is cut at the end of the second: {title:?}"
    );
    assert!(render(&doc).is_ok());
}

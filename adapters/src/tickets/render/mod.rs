//! The ticket PDF of one paid order: a page per ticket with the event, its local start time, the
//! ticket's tier, seat, holder and price, and the ticket's signed token as a QR code. This module
//! owns the page layout, the embedded font (DejaVu Sans, `adapters/assets/fonts/`, Bitstream Vera
//! licence in `LICENSE-DejaVu.txt` beside it) and how money and times are printed. It never does
//! I/O, never reads a clock or a random source, and never panics on a document: the same document
//! renders to the same bytes, so a file rewritten after a crash is the file written before it.
//!
//! The PDF is written with `pdf-writer` rather than `printpdf`: printpdf 0.12 names fonts and
//! the trailer `/ID` from a process-wide counter (two renders in one process differ), and it
//! subsets fonts only with its `text_layout` feature, which brings in the azul layout engine.
//! Without subsetting, every file carries the whole font: 760 KB, or 390 KB compressed.
//! Text is real text: a Type 0 font with Identity-H glyph ids, a `/ToUnicode` map so it can be
//! selected, searched and copied, and the font program subset to the glyphs the document shows.
//! The text is not shaped (no kerning, ligatures or joining). That is fine for Latin, Greek and
//! Cyrillic names. Characters DejaVu Sans lacks (CJK, emoji) print as U+FFFD, and Arabic prints
//! unjoined. The QR code always carries the exact token.

mod fonts;
mod layout;
mod pdf;
mod qr;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

use self::fonts::fonts;
use self::layout::PageLayout;
use self::pdf::write_pdf;
use self::qr::QrMatrix;

/// Tickets in one document, at most. A render holds every page's layout until the fonts are
/// subset: 10,000 pages make a 42 MB file, under the 64 MiB the adapter serves, and peak near
/// 300 MB of memory (measured). The engine's `limits.max_tickets_per_request` is 64 by default;
/// an order above this limit is refused here.
pub const MAX_TICKETS_PER_DOCUMENT: usize = 10_000;
/// Bytes in any one printed string, at most: the ceiling of the engine's
/// `limits.max_string_bytes`. Longer text than fits on the page is shortened with "…"; the
/// QR code, not the print, is what the gate reads.
pub const MAX_FIELD_BYTES: usize = 4_096;

/// Paper size. A4 unless the adapter is configured for Letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Paper {
    #[default]
    A4,
    Letter,
}

/// What one order's PDF prints: the event's and the order's fields, and a page per ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketDocument {
    pub event_name: String,
    pub venue: String,
    /// When the event starts, a UTC instant.
    pub starts_at_ms: i64,
    /// The event's IANA time zone, e.g. "Europe/Lisbon"; empty means UTC.
    pub time_zone: String,
    /// The buyer's name, as printed on every page.
    pub holder: String,
    pub order_id: String,
    /// ISO 4217 code; its minor-unit exponent decides how `price_minor` is printed.
    pub currency: String,
    pub tickets: Vec<TicketPage>,
    pub paper: Paper,
}

/// One ticket: one page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketPage {
    pub ticket_id: String,
    pub tier_name: String,
    /// Section, row and number; `None` for general admission.
    pub seat: Option<(String, String, String)>,
    /// What was paid for this ticket, fee included, in the currency's minor units.
    pub price_minor: u64,
    /// The signed token (base64url), exactly what the QR code holds.
    pub token: String,
}

/// Why a document was not rendered. Every one is about the document, so rendering it again
/// gives the same answer; the caller parks the order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the order has no tickets")]
    NoTickets,
    #[error("the order has {count} tickets; a document holds at most {max}")]
    TooManyTickets { count: usize, max: usize },
    #[error("{field} is {bytes} bytes; at most {max} are printed")]
    FieldTooLong {
        field: &'static str,
        bytes: usize,
        max: usize,
    },
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("start time {0} ms is out of range")]
    StartOutOfRange(i64),
    #[error("currency {0:?} is not an ISO 4217 code (three letters)")]
    InvalidCurrency(String),
    #[error("ticket {ticket_id} has an empty token")]
    EmptyToken { ticket_id: String },
    #[error("the token of ticket {ticket_id} does not fit in a qr code: {reason}")]
    TokenNotEncodable { ticket_id: String, reason: String },
    #[error("font: {0}")]
    Font(String),
}

/// Renders `doc` as a PDF: one page per ticket, in the order given.
pub fn render(doc: &TicketDocument) -> Result<Vec<u8>, RenderError> {
    check_limits(doc)?;
    let starts = local_start(doc.starts_at_ms, &doc.time_zone)?;
    let currency = currency_code(&doc.currency)?;
    let fonts = fonts()?;

    let (page_width, page_height) = doc.paper.size_pt();
    let count = doc.tickets.len();
    let mut pages = Vec::with_capacity(count);
    for (index, ticket) in doc.tickets.iter().enumerate() {
        if ticket.token.is_empty() {
            return Err(RenderError::EmptyToken {
                ticket_id: ticket.ticket_id.clone(),
            });
        }
        let qr = QrMatrix::encode(ticket.token.as_bytes()).map_err(|e| {
            RenderError::TokenNotEncodable {
                ticket_id: ticket.ticket_id.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut page = PageLayout::new(fonts, page_width, page_height);
        page.ticket(doc, ticket, &starts, currency, &qr, index + 1, count);
        pages.push(page);
    }
    write_pdf(doc, fonts, pages, page_width, page_height)
}

// ---------------------------------------------------------------------------------------------
// Input checks.

fn check_limits(doc: &TicketDocument) -> Result<(), RenderError> {
    if doc.tickets.is_empty() {
        return Err(RenderError::NoTickets);
    }
    if doc.tickets.len() > MAX_TICKETS_PER_DOCUMENT {
        return Err(RenderError::TooManyTickets {
            count: doc.tickets.len(),
            max: MAX_TICKETS_PER_DOCUMENT,
        });
    }
    let field = |field: &'static str, value: &str| {
        if value.len() > MAX_FIELD_BYTES {
            Err(RenderError::FieldTooLong {
                field,
                bytes: value.len(),
                max: MAX_FIELD_BYTES,
            })
        } else {
            Ok(())
        }
    };
    field("event name", &doc.event_name)?;
    field("venue", &doc.venue)?;
    field("time zone", &doc.time_zone)?;
    field("holder", &doc.holder)?;
    field("order id", &doc.order_id)?;
    for ticket in &doc.tickets {
        field("ticket id", &ticket.ticket_id)?;
        field("tier name", &ticket.tier_name)?;
        if let Some((section, row, number)) = &ticket.seat {
            field("seat section", section)?;
            field("seat row", row)?;
            field("seat number", number)?;
        }
        // The token's own bound is the QR code's capacity, checked when it is encoded.
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Time and money, as printed.

/// The event's start in its own time zone, as two printed lines.
#[derive(Debug, PartialEq, Eq)]
struct LocalStart {
    /// "Saturday 18 July 2026"
    date: String,
    /// "20:30 WEST (UTC+01:00)", or "19:30 UTC"
    time: String,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The start as tickets print it, on one line: `Saturday 12 December 2026, 20:00 WET
/// (UTC+00:00)`; `None` for an unknown zone or a time out of range.
pub fn local_start_text(starts_at_ms: i64, time_zone: &str) -> Option<String> {
    local_start(starts_at_ms, time_zone)
        .ok()
        .map(|l| format!("{}, {}", l.date, l.time))
}

fn local_start(starts_at_ms: i64, time_zone: &str) -> Result<LocalStart, RenderError> {
    let tz = if time_zone.is_empty() {
        TimeZone::UTC
    } else {
        TimeZone::get(time_zone).map_err(|_| RenderError::UnknownTimeZone(time_zone.into()))?
    };
    let instant = Timestamp::from_millisecond(starts_at_ms)
        .map_err(|_| RenderError::StartOutOfRange(starts_at_ms))?;
    let abbreviation = tz.to_offset_info(instant).abbreviation().to_string();
    let local = instant.to_zoned_datetime(tz);
    let weekday = match local.weekday() {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    };
    let month = MONTHS
        .get(usize::try_from(local.month() - 1).unwrap_or(0))
        .copied()
        .unwrap_or("");
    // English names, one format for every buyer: the engine keeps no locale per order.
    let date = format!("{weekday} {} {month} {}", local.day(), local.year());
    let clock = format!("{:02}:{:02}", local.hour(), local.minute());
    let offset_seconds = local.offset().seconds();
    let offset = format!(
        "UTC{}{:02}:{:02}",
        if offset_seconds < 0 { '-' } else { '+' },
        offset_seconds.unsigned_abs() / 3_600,
        offset_seconds.unsigned_abs() % 3_600 / 60
    );
    // Zones without a letter abbreviation in the tz database carry a numeric one ("-03"); the
    // offset says the same thing better, so it stands alone then.
    let lettered = abbreviation.chars().any(|c| c.is_ascii_alphabetic());
    let time = if offset_seconds == 0 && abbreviation == "UTC" {
        format!("{clock} UTC")
    } else if lettered {
        format!("{clock} {abbreviation} ({offset})")
    } else {
        format!("{clock} {offset}")
    };
    Ok(LocalStart { date, time })
}

/// Minor-unit exponents of the ISO 4217 codes whose exponent is not 2 (ISO 4217 list one;
/// funds codes included). Every other code prints two decimals.
const CURRENCY_EXPONENTS: &[(&str, u32)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLF", 4),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYI", 0),
    ("UYW", 4),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

fn currency_code(currency: &str) -> Result<[u8; 3], RenderError> {
    match currency.as_bytes() {
        [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => Ok([
            a.to_ascii_uppercase(),
            b.to_ascii_uppercase(),
            c.to_ascii_uppercase(),
        ]),
        _ => Err(RenderError::InvalidCurrency(currency.into())),
    }
}

fn currency_exponent(code: &[u8; 3]) -> u32 {
    CURRENCY_EXPONENTS
        .iter()
        .find(|(c, _)| c.as_bytes() == code)
        .map_or(2, |&(_, e)| e)
}

/// `minor` units of `currency` as tickets print them (`format_price`), for the emails to say
/// the same; a code that is not three letters is printed as given, with two decimals.
pub fn money(currency: &str, minor: u64) -> String {
    match currency_code(currency) {
        Ok(code) => format_price(&code, minor),
        Err(_) => format!("{currency} {}.{:02}", minor / 100, minor % 100),
    }
}

/// "EUR 1,234.50", "JPY 12,000", "BHD 12.345": the code, a space, the amount with a comma between
/// thousands and a point before the minor units. One format for every language of buyer.
fn format_price(code: &[u8; 3], price_minor: u64) -> String {
    let exponent = currency_exponent(code);
    let scale = 10u64.pow(exponent);
    let major = (price_minor / scale).to_string();
    let mut grouped = String::with_capacity(major.len() + major.len() / 3);
    for (i, digit) in major.chars().enumerate() {
        if i > 0 && (major.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let code = String::from_utf8_lossy(code);
    if exponent == 0 {
        format!("{code} {grouped}")
    } else {
        let minor = price_minor % scale;
        let width = exponent as usize;
        format!("{code} {grouped}.{minor:0width$}")
    }
}

#[cfg(test)]
mod tests;

//! Where everything goes on a ticket's page: the paper sizes, the card's measures and type
//! sizes, and each page laid out as positioned text runs (not yet encoded) and vector graphics,
//! the QR code drawn as filled modules. Sizes are in millimetres where a person would measure
//! them, points (1/72 in) in the PDF. It never encodes text to glyphs, subsets fonts or writes the
//! PDF file.

use pdf_writer::Content;

use super::fonts::{Fonts, Weight, break_lines, ellipsize, printable};
use super::qr::QrMatrix;
use super::{LocalStart, Paper, TicketDocument, TicketPage, format_price};

pub(super) fn mm(v: f32) -> f32 {
    v * 72.0 / 25.4
}

impl Paper {
    pub(super) fn size_pt(self) -> (f32, f32) {
        match self {
            Paper::A4 => (mm(210.0), mm(297.0)),
            Paper::Letter => (612.0, 792.0),
        }
    }
}

/// The ticket is a framed card at the top of the page, so a page folded in half or cut along
/// the frame is still the whole ticket.
pub(super) const MARGIN_MM: f32 = 16.0;
const PADDING_MM: f32 = 8.0;
/// The QR code's side, quiet zone included: tokens of 150 to 250 characters make versions 8 to
/// 11 at error correction M, modules of 1.0 to 0.8 mm, read easily off paper or a phone screen.
/// Longer tokens (long holder names) make denser codes in the same square.
const QR_MM: f32 = 56.0;
/// White modules around the code, as ISO/IEC 18004 asks.
const QR_QUIET_MODULES: usize = 4;

const TITLE_PT: f32 = 24.0;
pub(super) const TITLE_MIN_PT: f32 = 15.0;
const VENUE_PT: f32 = 13.0;
const LABEL_PT: f32 = 7.5;
const LABEL_TRACKING_PT: f32 = 0.8;
const VALUE_PT: f32 = 14.0;
const VALUE_MIN_PT: f32 = 9.0;
const SMALL_PT: f32 = 8.5;
const LINE_PT: f32 = 0.6;
const FRAME_PT: f32 = 1.2;

/// A string at a position, laid out but not yet encoded: glyph ids are only known once every
/// page is laid out and the font subset is made.
pub(super) struct TextRun {
    pub(super) weight: Weight,
    pub(super) size: f32,
    pub(super) tracking: f32,
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) text: String,
}

pub(super) struct PageLayout<'f> {
    fonts: &'f Fonts,
    width: f32,
    height: f32,
    pub(super) texts: Vec<TextRun>,
    pub(super) graphics: Content,
}

impl<'f> PageLayout<'f> {
    pub(super) fn new(fonts: &'f Fonts, width: f32, height: f32) -> Self {
        PageLayout {
            fonts,
            width,
            height,
            texts: Vec::new(),
            graphics: Content::new(),
        }
    }

    /// Lays out one ticket. PDF's y axis points up: `y` starts at the frame's top edge and
    /// decreases as the layout goes down the page.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ticket(
        &mut self,
        doc: &TicketDocument,
        ticket: &TicketPage,
        starts: &LocalStart,
        currency: [u8; 3],
        qr: &QrMatrix,
        number: usize,
        count: usize,
    ) {
        let left = mm(MARGIN_MM);
        let right = self.width - mm(MARGIN_MM);
        let inner_left = left + mm(PADDING_MM);
        let inner_right = right - mm(PADDING_MM);
        let inner_width = inner_right - inner_left;
        let frame_top = self.height - mm(MARGIN_MM);
        let mut y = frame_top - mm(PADDING_MM);

        // Header: the event, as large as fits in two lines, and the venue.
        let (title_lines, title_size) = self.wrap(
            Weight::Bold,
            &doc.event_name,
            inner_width,
            TITLE_PT,
            TITLE_MIN_PT,
            2,
        );
        for line in title_lines {
            y -= title_size;
            self.text(Weight::Bold, title_size, inner_left, y, line);
            y -= title_size * 0.25;
        }
        y -= VENUE_PT * 0.35;
        let (venue, venue_size) = self.fit(
            Weight::Regular,
            &doc.venue,
            inner_width,
            VENUE_PT,
            VALUE_MIN_PT,
        );
        y -= venue_size;
        self.text(Weight::Regular, venue_size, inner_left, y, venue);
        y -= mm(5.0);
        self.rule(left, right, y);

        // Body: the details on the left, the code on the right.
        let body_top = y - mm(6.0);
        let qr_size = mm(QR_MM);
        let qr_left = inner_right - qr_size;
        let details_width = qr_left - mm(6.0) - inner_left;
        let seat = match &ticket.seat {
            Some((section, row, number)) => {
                format!("Section {section} · Row {row} · Seat {number}")
            }
            None => "General admission".to_string(),
        };
        let details: [(&str, &str, Weight); 6] = [
            ("DATE", &starts.date, Weight::Bold),
            ("TIME", &starts.time, Weight::Bold),
            ("TICKET", &ticket.tier_name, Weight::Bold),
            ("SEAT", &seat, Weight::Bold),
            ("HOLDER", &doc.holder, Weight::Regular),
            (
                "PRICE PAID",
                &format_price(&currency, ticket.price_minor),
                Weight::Regular,
            ),
        ];
        let mut row_y = body_top;
        for (label, value, weight) in details {
            row_y -= LABEL_PT;
            self.label(inner_left, row_y, label);
            let (value, size) = self.fit(weight, value, details_width, VALUE_PT, VALUE_MIN_PT);
            row_y -= VALUE_PT * 0.45 + size;
            self.text(weight, size, inner_left, row_y, value);
            row_y -= mm(4.2);
        }
        // The code's top edge lines up with the first label's cap height, its quiet zone
        // sitting just outside that line.
        let quiet = qr_size * QR_QUIET_MODULES as f32 / (qr.width + 2 * QR_QUIET_MODULES) as f32;
        let qr_top = body_top + quiet - LABEL_PT * 0.3;
        self.qr_code(qr, qr_left, qr_top - qr_size, qr_size);
        let caption_y = qr_top - qr_size + quiet - SMALL_PT - 2.0;
        let (caption, caption_size) = self.fit(
            Weight::Regular,
            &format!("Ticket {} of {count}", number),
            qr_size,
            SMALL_PT,
            SMALL_PT,
        );
        let caption_x =
            qr_left + (qr_size - self.fonts.regular.width(&caption, caption_size)) / 2.0;
        self.text(Weight::Regular, caption_size, caption_x, caption_y, caption);

        // Footer: the ids a support person asks for.
        let body_bottom = row_y.min(caption_y - SMALL_PT) + mm(1.0);
        y = body_bottom - mm(3.0);
        self.rule(left, right, y);
        y -= mm(4.0);
        let column = inner_width / 2.0;
        y -= LABEL_PT;
        self.label(inner_left, y, "ORDER");
        self.label(inner_left + column, y, "TICKET ID");
        y -= LABEL_PT * 0.45 + SMALL_PT + 1.0;
        let (order, order_size) = self.fit(
            Weight::Regular,
            &doc.order_id,
            column - mm(3.0),
            SMALL_PT,
            6.0,
        );
        self.text(Weight::Regular, order_size, inner_left, y, order);
        let (id, id_size) = self.fit(Weight::Regular, &ticket.ticket_id, column, SMALL_PT, 6.0);
        self.text(Weight::Regular, id_size, inner_left + column, y, id);
        let frame_bottom = y - mm(PADDING_MM) + mm(2.0);
        self.frame(left, frame_bottom, right - left, frame_top - frame_bottom);

        // Under the frame: how the ticket is used.
        let mut note_y = frame_bottom - mm(7.0) - SMALL_PT;
        for line in [
            "Show this page at the entrance, printed or on a phone screen. The QR code admits one",
            "person once: keep it private, as whoever shows it first is let in.",
        ] {
            let (line, size) = self.fit(Weight::Regular, line, right - left, SMALL_PT, 6.0);
            self.text(Weight::Regular, size, left, note_y, line);
            note_y -= SMALL_PT * 1.4;
        }
    }

    fn text(&mut self, weight: Weight, size: f32, x: f32, y: f32, text: String) {
        self.texts.push(TextRun {
            weight,
            size,
            tracking: 0.0,
            x,
            y,
            text,
        });
    }

    /// A field's name: small bold capitals, spaced out, above its value.
    fn label(&mut self, x: f32, y: f32, text: &str) {
        self.texts.push(TextRun {
            weight: Weight::Bold,
            size: LABEL_PT,
            tracking: LABEL_TRACKING_PT,
            x,
            y,
            text: text.to_string(),
        });
    }

    /// `text` on one line within `width`: at `size`, else as much smaller as it needs down to
    /// `min_size`, else cut with "…" at `min_size`.
    fn fit(
        &self,
        weight: Weight,
        text: &str,
        width: f32,
        size: f32,
        min_size: f32,
    ) -> (String, f32) {
        let font = self.fonts.get(weight);
        let text = printable(text);
        let natural = font.width(&text, size);
        if natural <= width {
            return (text, size);
        }
        let scaled = size * width / natural;
        if scaled >= min_size {
            // A hair under the exact ratio, so rounding never pushes it past the edge.
            return (text, scaled * 0.999);
        }
        (ellipsize(font, &text, width, min_size), min_size)
    }

    /// `text` in at most `max_lines` lines within `width`, broken between words, at the largest
    /// size from `size` down to `min_size` that fits; the last line cut with "…" if none does.
    fn wrap(
        &self,
        weight: Weight,
        text: &str,
        width: f32,
        size: f32,
        min_size: f32,
        max_lines: usize,
    ) -> (Vec<String>, f32) {
        let font = self.fonts.get(weight);
        let text = printable(text);
        let mut current = size;
        loop {
            let lines = break_lines(font, &text, width, current);
            let fits =
                lines.len() <= max_lines && lines.iter().all(|l| font.width(l, current) <= width);
            if fits {
                return (lines, current);
            }
            if current <= min_size {
                let mut lines = lines;
                let overflow = lines.len() > max_lines;
                lines.truncate(max_lines);
                for (i, line) in lines.iter_mut().enumerate() {
                    let cut_after = i + 1 == max_lines && overflow;
                    let marked = format!("{line}…");
                    if cut_after && font.width(&marked, current) <= width {
                        *line = marked;
                    } else if cut_after || font.width(line, current) > width {
                        *line = ellipsize(font, line, width, current);
                    }
                }
                return (lines, current);
            }
            current = (current - 1.0).max(min_size);
        }
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32) {
        self.graphics
            .set_line_width(LINE_PT)
            .move_to(x1, y)
            .line_to(x2, y)
            .stroke();
    }

    fn frame(&mut self, x: f32, y: f32, width: f32, height: f32) {
        self.graphics
            .set_line_width(FRAME_PT)
            .rect(x, y, width, height)
            .stroke();
    }

    /// The code as filled squares in one path, in module units under a scaling matrix: exact
    /// edges at any print resolution, a few bytes per module, and one fill so no hairline seams
    /// appear between touching modules when a viewer anti-aliases.
    fn qr_code(&mut self, qr: &QrMatrix, x: f32, y: f32, size: f32) {
        let modules = qr.width;
        let module = size / (modules + 2 * QR_QUIET_MODULES) as f32;
        let origin = QR_QUIET_MODULES as f32 * module;
        let g = &mut self.graphics;
        g.save_state();
        g.set_fill_gray(0.0);
        g.transform([module, 0.0, 0.0, module, x + origin, y + origin]);
        for row in 0..modules {
            // Row 0 is the top of the code; PDF's y axis points up.
            let y = (modules - 1 - row) as f32;
            let mut col = 0;
            while col < modules {
                if qr.is_dark(col, row) {
                    let start = col;
                    while col < modules && qr.is_dark(col, row) {
                        col += 1;
                    }
                    g.rect(start as f32, y, (col - start) as f32, 1.0);
                } else {
                    col += 1;
                }
            }
        }
        g.fill_nonzero();
        g.restore_state();
    }
}

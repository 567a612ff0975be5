//! The two embedded DejaVu Sans programs (regular and bold), parsed once per process, with the
//! metrics layout and the PDF's font dictionaries need, and the text helpers that measure with
//! them: making text printable, breaking it into lines, cutting it with "…". It never lays out a
//! page and never writes PDF objects.

use std::sync::LazyLock;

use pdf_writer::Name;

use super::RenderError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Weight {
    Regular,
    Bold,
}

pub(super) const WEIGHTS: [Weight; 2] = [Weight::Regular, Weight::Bold];

impl Weight {
    pub(super) fn resource(self) -> Name<'static> {
        match self {
            Weight::Regular => Name(b"F1"),
            Weight::Bold => Name(b"F2"),
        }
    }
}

/// One embedded font program with what layout and the font dictionaries need from it. Parsed
/// once per process, though parsing is cheap (7 µs, against 5 ms for a four-ticket order): what
/// a render spends is the QR codes' masks and stream compression, not the font.
pub(super) struct FontProgram {
    pub(super) data: &'static [u8],
    pub(super) postscript_name: &'static str,
    pub(super) face: ttf_parser::Face<'static>,
    pub(super) units_per_em: f32,
    /// Advance width of every glyph, in font units.
    advances: Vec<u16>,
    /// What a character the font lacks is drawn with: U+FFFD, or .notdef.
    pub(super) replacement: u16,
    pub(super) bbox: [f32; 4],
    pub(super) ascent: f32,
    pub(super) descent: f32,
    pub(super) cap_height: f32,
}

impl FontProgram {
    fn parse(data: &'static [u8], postscript_name: &'static str) -> Result<Self, String> {
        let face = ttf_parser::Face::parse(data, 0).map_err(|e| e.to_string())?;
        let advances = (0..face.number_of_glyphs())
            .map(|g| face.glyph_hor_advance(ttf_parser::GlyphId(g)).unwrap_or(0))
            .collect();
        let units_per_em = f32::from(face.units_per_em());
        let per_mille = |v: i16| f32::from(v) * 1000.0 / units_per_em;
        let bbox = face.global_bounding_box();
        Ok(FontProgram {
            data,
            postscript_name,
            replacement: face.glyph_index('\u{FFFD}').map_or(0, |g| g.0),
            bbox: [
                per_mille(bbox.x_min),
                per_mille(bbox.y_min),
                per_mille(bbox.x_max),
                per_mille(bbox.y_max),
            ],
            ascent: per_mille(face.ascender()),
            descent: per_mille(face.descender()),
            cap_height: per_mille(face.capital_height().unwrap_or(face.ascender())),
            units_per_em,
            advances,
            face,
        })
    }

    pub(super) fn glyph(&self, c: char) -> u16 {
        self.face.glyph_index(c).map_or(self.replacement, |g| g.0)
    }

    pub(super) fn advance(&self, glyph: u16) -> f32 {
        f32::from(self.advances.get(usize::from(glyph)).copied().unwrap_or(0))
    }

    /// Width of `text` set at `size` points, in points. No kerning: the PDF places glyphs by
    /// their advances alone, and this must agree with it.
    pub(super) fn width(&self, text: &str, size: f32) -> f32 {
        let units: f32 = text.chars().map(|c| self.advance(self.glyph(c))).sum();
        units * size / self.units_per_em
    }
}

pub(super) struct Fonts {
    pub(super) regular: FontProgram,
    bold: FontProgram,
}

impl Fonts {
    pub(super) fn get(&self, weight: Weight) -> &FontProgram {
        match weight {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        }
    }
}

static FONTS: LazyLock<Result<Fonts, String>> = LazyLock::new(|| {
    Ok(Fonts {
        regular: FontProgram::parse(
            include_bytes!("../../../assets/fonts/DejaVuSans.ttf"),
            "DejaVuSans",
        )?,
        bold: FontProgram::parse(
            include_bytes!("../../../assets/fonts/DejaVuSans-Bold.ttf"),
            "DejaVuSans-Bold",
        )?,
    })
});

pub(super) fn fonts() -> Result<&'static Fonts, RenderError> {
    FONTS.as_ref().map_err(|e| RenderError::Font(e.clone()))
}

/// Control characters would be drawn as boxes; they become spaces.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Greedy line breaking at spaces; a word longer than a line stays whole (and is cut later).
pub(super) fn break_lines(font: &FontProgram, text: &str, width: f32, size: f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if line.is_empty() {
            line.push_str(word);
            continue;
        }
        let candidate = format!("{line} {word}");
        if font.width(&candidate, size) <= width {
            line = candidate;
        } else {
            lines.push(std::mem::take(&mut line));
            line.push_str(word);
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The longest prefix of `text` that fits in `width` with "…" after it.
pub(super) fn ellipsize(font: &FontProgram, text: &str, width: f32, size: f32) -> String {
    let budget = width - font.width("…", size);
    let mut used = 0.0;
    let mut out = String::new();
    for c in text.chars() {
        let w = font.advance(font.glyph(c)) * size / font.units_per_em;
        if used + w > budget {
            break;
        }
        used += w;
        out.push(c);
    }
    let mut out = out.trim_end().to_string();
    out.push('…');
    out
}

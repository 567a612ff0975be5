//! The PDF file of laid-out pages: each font subset to the glyphs the document shows and
//! embedded as a Type 0 font with a `/ToUnicode` map, the pages' text encoded to the subset's
//! glyph ids, every stream compressed, and the file identifier taken from the order. It never lays
//! out a page and never picks what is printed; the same pages give the same bytes.

use std::collections::{BTreeMap, BTreeSet};

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::fonts::{FontProgram, Fonts, WEIGHTS, Weight, printable};
use super::layout::{PageLayout, TextRun};
use super::{RenderError, TicketDocument};

const IDENTITY: SystemInfo = SystemInfo {
    registry: Str(b"Adobe"),
    ordering: Str(b"Identity"),
    supplement: 0,
};

/// Compression level for every stream. Measured on 200 orders of 4 tickets: level 6 (zlib's
/// default) made 41 KB per order and spent 40% of a render compressing the QR codes' content
/// streams; level 2 makes 45 KB in two thirds of the time.
const DEFLATE_LEVEL: u8 = 2;

/// The font of one weight as this document embeds it: the glyphs its text uses, renumbered.
struct EmbeddedFont {
    remapper: subsetter::GlyphRemapper,
    /// New glyph id to the character it stands for, for `/ToUnicode`.
    unicode: BTreeMap<u16, char>,
}

fn embed(font: &FontProgram, runs: &[&TextRun]) -> EmbeddedFont {
    // Glyphs in ascending original order, so the subset depends only on which glyphs the
    // document shows, not on the order it shows them in.
    let mut glyphs = BTreeSet::new();
    let mut unicode_by_glyph = BTreeMap::new();
    for run in runs {
        for c in run.text.chars() {
            let glyph = font.glyph(c);
            glyphs.insert(glyph);
            let c = if glyph == font.replacement && font.face.glyph_index(c).is_none() {
                '\u{FFFD}'
            } else {
                c
            };
            unicode_by_glyph.entry(glyph).or_insert(c);
        }
    }
    let glyphs: Vec<u16> = glyphs.into_iter().collect();
    let remapper = subsetter::GlyphRemapper::new_from_glyphs_sorted(&glyphs);
    let unicode = unicode_by_glyph
        .into_iter()
        .filter_map(|(old, c)| remapper.get(old).map(|new| (new, c)))
        .collect();
    EmbeddedFont { remapper, unicode }
}

/// A six-letter subset tag (`ABCDEF+DejaVuSans`) derived from the glyph set, as PDF readers
/// expect a subset to be named: the same glyphs, the same tag (FNV-1a, no randomness).
fn subset_tag(remapper: &subsetter::GlyphRemapper) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for glyph in remapper.remapped_gids() {
        for byte in glyph.to_be_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (0..6)
        .map(|i| char::from(b'A' + ((hash >> (i * 5)) % 26) as u8))
        .collect()
}

fn compress(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, DEFLATE_LEVEL)
}

pub(super) fn write_pdf(
    doc: &TicketDocument,
    fonts: &Fonts,
    pages: Vec<PageLayout<'_>>,
    page_width: f32,
    page_height: f32,
) -> Result<Vec<u8>, RenderError> {
    let mut pdf = Pdf::new();
    let mut next = Ref::new(1);
    let catalog_id = next.bump();
    let tree_id = next.bump();
    let info_id = next.bump();

    let mut font_refs = BTreeMap::new();
    for weight in WEIGHTS {
        let font = fonts.get(weight);
        let runs: Vec<&TextRun> = pages
            .iter()
            .flat_map(|p| p.texts.iter())
            .filter(|r| r.weight == weight)
            .collect();
        let embedded = embed(font, &runs);
        let type0_id = next.bump();
        let cid_id = next.bump();
        let descriptor_id = next.bump();
        let file_id = next.bump();
        let cmap_id = next.bump();
        let base_font = format!(
            "{}+{}",
            subset_tag(&embedded.remapper),
            font.postscript_name
        );
        let base_font = Name(base_font.as_bytes());

        let program = subsetter::subset(font.data, 0, &embedded.remapper)
            .map_err(|e| RenderError::Font(format!("subsetting {}: {e}", font.postscript_name)))?;
        pdf.stream(file_id, &compress(&program))
            .filter(Filter::FlateDecode)
            .pair(
                Name(b"Length1"),
                i32::try_from(program.len()).unwrap_or(i32::MAX),
            );

        pdf.type0_font(type0_id)
            .base_font(base_font)
            .encoding_predefined(Name(b"Identity-H"))
            .descendant_font(cid_id)
            .to_unicode(cmap_id);

        let mut cid = pdf.cid_font(cid_id);
        cid.subtype(CidFontType::Type2)
            .base_font(base_font)
            .system_info(IDENTITY)
            .font_descriptor(descriptor_id)
            .cid_to_gid_map_predefined(Name(b"Identity"));
        // New glyph ids are 0 (.notdef), then the document's glyphs in order: one run.
        let scale = 1000.0 / font.units_per_em;
        cid.widths().consecutive(
            0,
            embedded
                .remapper
                .remapped_gids()
                .map(|old| font.advance(old) * scale),
        );
        cid.finish();

        pdf.font_descriptor(descriptor_id)
            .name(base_font)
            .flags(FontFlags::NON_SYMBOLIC)
            .bbox(Rect::new(
                font.bbox[0],
                font.bbox[1],
                font.bbox[2],
                font.bbox[3],
            ))
            .italic_angle(0.0)
            .ascent(font.ascent)
            .descent(font.descent)
            .cap_height(font.cap_height)
            .stem_v(if weight == Weight::Bold { 140.0 } else { 80.0 })
            .font_file2(file_id);

        let mut cmap = pdf_writer::types::UnicodeCmap::new(Name(b"Custom"), IDENTITY);
        for (&glyph, &c) in &embedded.unicode {
            cmap.pair(glyph, c);
        }
        pdf.cmap(cmap_id, &compress(cmap.finish().as_slice()))
            .filter(Filter::FlateDecode);

        font_refs.insert(weight, (type0_id, embedded));
    }

    let mut page_ids = Vec::with_capacity(pages.len());
    for page in pages {
        let page_id = next.bump();
        let content_id = next.bump();
        page_ids.push(page_id);

        let mut content = Content::new();
        content.set_fill_gray(0.0).set_stroke_gray(0.0);
        content.begin_text();
        for run in &page.texts {
            let Some((_, embedded)) = font_refs.get(&run.weight) else {
                continue;
            };
            let font = fonts.get(run.weight);
            let mut encoded = Vec::with_capacity(run.text.len() * 2);
            for c in run.text.chars() {
                let glyph = embedded.remapper.get(font.glyph(c)).unwrap_or(0);
                encoded.extend_from_slice(&glyph.to_be_bytes());
            }
            content
                .set_font(run.weight.resource(), run.size)
                .set_char_spacing(run.tracking)
                .set_text_matrix([1.0, 0.0, 0.0, 1.0, run.x, run.y])
                .show(Str(&encoded));
        }
        content.end_text();
        let mut bytes = content.finish().into_vec();
        // pdf-writer ends a content stream without a separator; two joined need one.
        bytes.push(b'\n');
        bytes.extend_from_slice(page.graphics.finish().as_slice());
        pdf.stream(content_id, &compress(&bytes))
            .filter(Filter::FlateDecode);

        let mut writer = pdf.page(page_id);
        writer
            .media_box(Rect::new(0.0, 0.0, page_width, page_height))
            .parent(tree_id)
            .contents(content_id);
        let mut resources = writer.resources();
        let mut font_dict = resources.fonts();
        for (weight, (type0_id, _)) in &font_refs {
            font_dict.pair(weight.resource(), *type0_id);
        }
    }

    pdf.pages(tree_id)
        .kids(page_ids.iter().copied())
        .count(i32::try_from(page_ids.len()).unwrap_or(i32::MAX));
    pdf.catalog(catalog_id).pages(tree_id).lang(TextStr("en"));
    let title = printable(&doc.event_name);
    pdf.document_info(info_id)
        .title(TextStr(&title))
        .producer(TextStr("boxoffice"));
    // The file identifier is the order's, not a random one: a re-render is the same file.
    let id = doc.order_id.as_bytes().to_vec();
    pdf.set_file_id((id.clone(), id));
    Ok(pdf.finish())
}

//! The QR code of a ticket's token: the smallest code at error correction M, with the mask
//! chosen as the `qrcode` crate chooses it but scored a row at a time. It never draws the code
//! (the layout does) and never sees anything but the token's bytes.

use qrcode::canvas::{Canvas, MaskPattern};
use qrcode::types::QrError;
use qrcode::{Color, EcLevel};

/// A QR code's modules, row-major, row 0 at the top; `true` is dark.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct QrMatrix {
    pub(super) width: usize,
    pub(super) dark: Vec<bool>,
}

const MASK_PATTERNS: [MaskPattern; 8] = [
    MaskPattern::Checkerboard,
    MaskPattern::HorizontalLines,
    MaskPattern::VerticalLines,
    MaskPattern::DiagonalLines,
    MaskPattern::LargeCheckerboard,
    MaskPattern::Fields,
    MaskPattern::Diamonds,
    MaskPattern::Meadow,
];

impl QrMatrix {
    /// The smallest QR code at error correction M holding `data`, module for module what
    /// `qrcode::QrCode::with_error_correction_level` makes (a test holds them equal).
    ///
    /// Error correction M is the level the token layout was sized for (docs/tickets.md): it
    /// survives a crease or a smudge without making the code too dense to print.
    ///
    /// Only the choice among the eight masks is done here, for codes up to 128 modules wide
    /// (version 27, tokens up to about 1,100 characters): the crate scores each mask through a
    /// boxed closure per module, 1.9 ms a code here, most of a ticket's 2 ms budget; with each
    /// row and column scored as one `u128` the whole encoding takes 0.25 ms. Wider codes take
    /// the crate's own path.
    pub(super) fn encode(data: &[u8]) -> Result<QrMatrix, QrError> {
        let bits = qrcode::bits::encode_auto(data, EcLevel::M)?;
        let version = bits.version();
        let width = usize::try_from(version.width()).map_err(|_| QrError::InvalidVersion)?;
        if width > 128 {
            let code = qrcode::QrCode::with_bits(bits, EcLevel::M)?;
            let dark = code
                .to_colors()
                .into_iter()
                .map(|c| c == Color::Dark)
                .collect();
            return Ok(QrMatrix { width, dark });
        }
        let (data, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, EcLevel::M)?;
        let mut canvas = Canvas::new(version, EcLevel::M);
        canvas.draw_all_functional_patterns();
        canvas.draw_data(&data, &ec);
        let mut best: Option<(u32, Vec<bool>)> = None;
        for pattern in MASK_PATTERNS {
            let mut masked = canvas.clone();
            masked.apply_mask(pattern);
            let dark: Vec<bool> = masked
                .into_colors()
                .into_iter()
                .map(|c| c == Color::Dark)
                .collect();
            let score = mask_penalty(&dark, width);
            // Strictly lower: on a tie the earlier mask stays, as `Iterator::min_by_key` keeps it.
            if best.as_ref().is_none_or(|(lowest, _)| score < *lowest) {
                best = Some((score, dark));
            }
        }
        let (_, dark) = best.ok_or(QrError::InvalidVersion)?;
        Ok(QrMatrix { width, dark })
    }

    pub(super) fn is_dark(&self, x: usize, y: usize) -> bool {
        self.dark.get(y * self.width + x).copied().unwrap_or(false)
    }
}

/// The penalty of a masked code as `qrcode::canvas::Canvas` scores it (ISO/IEC 18004 §7.8.3 with
/// that crate's reading of rules 3 and 4), so the same mask is chosen. Every row and column is
/// one `u128`, bit `i` its module `i`; `width` is at most 128.
fn mask_penalty(dark: &[bool], width: usize) -> u32 {
    if width == 0 || width > 128 || dark.len() != width * width {
        return u32::MAX;
    }
    let mut rows = vec![0u128; width];
    let mut columns = vec![0u128; width];
    for (y, row) in dark.chunks_exact(width).enumerate() {
        for (x, &d) in row.iter().enumerate() {
            rows[y] |= u128::from(d) << x;
            columns[x] |= u128::from(d) << y;
        }
    }
    let all = u128::MAX >> (128 - width);
    let mut score = lines_penalty(&rows, width) + lines_penalty(&columns, width);
    // Rule 2: each 2x2 block of one color costs 3.
    for pair in rows.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let same = !(a ^ b) & !(a ^ (a >> 1)) & !(b ^ (b >> 1)) & (all >> 1);
        score += 3 * same.count_ones();
    }
    // Rule 4: the share of dark modules away from one half, in half-percent steps.
    let dark_modules: usize = rows.iter().map(|r| r.count_ones() as usize).sum();
    let ratio = dark_modules * 200 / dark.len();
    score + u32::try_from(ratio.abs_diff(100)).unwrap_or(u32::MAX)
}

/// Rules 1 and 3 along `lines`, each `width` modules.
fn lines_penalty(lines: &[u128], width: usize) -> u32 {
    let all = u128::MAX >> (128 - width);
    // Bits `from..to` set.
    let span = |from: usize, to: usize| {
        if to <= from {
            0
        } else {
            (all >> (width - (to - from))) << from
        }
    };
    let mut score = 0;
    let mut finder = 0u32;
    for &line in lines {
        // Rule 1: a run of 5 + n modules of one color costs 3 + n. Bit i of `ends` marks the
        // last module of a run.
        let mut ends = ((line ^ (line >> 1)) & (all >> 1)) | (1 << (width - 1));
        let mut start = 0;
        while ends != 0 {
            let end = ends.trailing_zeros();
            let run = end + 1 - start;
            if run >= 5 {
                score += run - 2;
            }
            start = end + 1;
            ends &= ends - 1;
        }
        // Rule 3: dark-light-dark-dark-dark-light-dark (bit i is the pattern's first module)
        // without four light modules on both sides costs 40.
        let mut found = line
            & !(line >> 1)
            & (line >> 2)
            & (line >> 3)
            & (line >> 4)
            & !(line >> 5)
            & (line >> 6)
            & (all >> 6);
        while found != 0 {
            let j = found.trailing_zeros() as usize;
            let dark_before = line & span(j.saturating_sub(4), j) != 0;
            let dark_after = line & span(j + 7, (j + 11).min(width)) != 0;
            if !dark_before || !dark_after {
                finder += 40;
            }
            found &= found - 1;
        }
    }
    // The three finder patterns match nine times in every code; the crate leaves those out.
    score + finder.saturating_sub(360)
}

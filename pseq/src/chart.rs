//! Horizontal bar charts of speedups, written as PNG files: `pseq bench exec --chart` draws one
//! bar per workload (and one per mainnet block), with the 1.0x line where parallel equals
//! sequential, and where a bar has one, a black mark at its bound (`--bound`).
//!
//! Drawn on an indexed-colour canvas with the public-domain 8x8 font of `font8x8`, and encoded by
//! hand (PNG chunks, CRC-32, zlib stream from `miniz_oxide`): a chart needs nothing more, and no
//! font files or system libraries have to be present.

use std::path::Path;

/// One bar: a label and a value (a speedup, drawn against the 1.0x line).
#[derive(Debug, Clone)]
pub struct Bar {
    /// Text left of the bar.
    pub label: String,
    /// Length of the bar.
    pub value: f64,
    /// A mark drawn across the bar's row at this value (the bound of `bench exec --bound`).
    pub mark: Option<f64>,
    /// A reference figure measured elsewhere (RISE pevm's, from its anchor), drawn in blue
    /// instead of green or red.
    pub anchor: bool,
}

const WHITE: u8 = 0;
const BLACK: u8 = 1;
const GRID: u8 = 2;
const FASTER: u8 = 3;
const SLOWER: u8 = 4;
const TEXT_GREY: u8 = 5;
const ANCHOR: u8 = 6;
const PALETTE: [[u8; 3]; 7] = [[255, 255, 255], [0, 0, 0], [225, 225, 225], [46, 139, 87], [205, 92, 60], [90, 90, 90], [95, 125, 185]];

const GLYPH: usize = 8;
const ROW: usize = 14;
const MARGIN: usize = 12;

/// An image of palette indexes.
struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: usize, height: usize) -> Self {
        Self { width, height, pixels: vec![WHITE; width * height] }
    }

    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, colour: u8) {
        for row in y..(y + h).min(self.height) {
            let start = row * self.width;
            for col in x..(x + w).min(self.width) {
                self.pixels[start + col] = colour;
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
    fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: u8) {
        for (i, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() { ch as usize } else { '?' as usize };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits & (1 << col) != 0 {
                        self.rect(x + (i * GLYPH + col) * scale, y + row * scale, scale, scale, colour);
                    }
                }
            }
        }
    }
}

/// Writes a horizontal bar chart of `bars` to `path` as a PNG, under `title`, with a vertical
/// line at `reference` (1.0 for speedups).
pub fn bar_chart(path: &Path, title: &str, bars: &[Bar], reference: f64) -> Result<(), String> {
    let label_chars = bars.iter().map(|b| b.label.chars().count()).max().unwrap_or(0).min(48);
    let plot_left = MARGIN + label_chars * GLYPH + 10;
    let plot_width = 560;
    let width = (plot_left + plot_width + 7 * GLYPH + MARGIN).max(2 * MARGIN + 2 * GLYPH * title.chars().count());
    let plot_top = MARGIN + 2 * GLYPH + 14;
    let height = plot_top + bars.len() * ROW + 3 * GLYPH + MARGIN;
    let finite = bars.iter().flat_map(|b| [Some(b.value), b.mark]).flatten().filter(|v| v.is_finite());
    let largest = finite.fold(reference, f64::max);
    let step = if largest <= 2.0 { 0.25 } else if largest <= 5.0 { 0.5 } else { (largest / 8.0).ceil() };
    let top = (largest * 1.05 / step).ceil() * step;
    let x_of = |v: f64| plot_left + ((v.clamp(0.0, top) / top) * plot_width as f64).round() as usize;

    let mut canvas = Canvas::new(width, height);
    canvas.text(MARGIN, MARGIN, title, 2, BLACK);
    let plot_height = bars.len() * ROW;
    let mut tick = 0.0;
    while tick <= top + 1e-9 {
        let x = x_of(tick);
        canvas.rect(x, plot_top, 1, plot_height, GRID);
        let label = format!("{tick}x");
        let label_x = x.saturating_sub(label.len() * GLYPH / 2);
        canvas.text(label_x, plot_top + plot_height + 6, &label, 1, TEXT_GREY);
        tick += step;
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = plot_top + i * ROW;
        let label: String = bar.label.chars().take(48).collect();
        canvas.text(plot_left - 10 - label.chars().count() * GLYPH, y + (ROW - GLYPH) / 2, &label, 1, BLACK);
        if !bar.value.is_finite() {
            continue;
        }
        if let Some(mark) = bar.mark.filter(|m| m.is_finite()) {
            canvas.rect(x_of(mark), y, 2, ROW, BLACK);
        }
        let colour = match (bar.anchor, bar.value >= reference) {
            (true, _) => ANCHOR,
            (false, true) => FASTER,
            (false, false) => SLOWER,
        };
        let end = x_of(bar.value);
        canvas.rect(plot_left, y + 2, end - plot_left, ROW - 4, colour);
        canvas.text(end + 4, y + (ROW - GLYPH) / 2, &format!("{:.2}x", bar.value), 1, BLACK);
    }
    let reference_x = x_of(reference);
    canvas.rect(reference_x, plot_top - 4, 2, plot_height + 4, BLACK);
    canvas.rect(plot_left, plot_top + plot_height, plot_width, 1, BLACK);
    std::fs::write(path, encode_png(&canvas)).map_err(|e| format!("{}: {e}", path.display()))
}

fn crc32(chunks: &[&[u8]]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for data in chunks {
        for byte in *data {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(&[kind, data]).to_be_bytes());
}

/// An 8-bit indexed-colour PNG of the canvas.
fn encode_png(canvas: &Canvas) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&(canvas.width as u32).to_be_bytes());
    header.extend_from_slice(&(canvas.height as u32).to_be_bytes());
    header.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    let palette: Vec<u8> = PALETTE.iter().flatten().copied().collect();
    chunk(&mut out, b"PLTE", &palette);
    let mut raw = Vec::with_capacity((canvas.width + 1) * canvas.height);
    for row in canvas.pixels.chunks(canvas.width) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    chunk(&mut out, b"IDAT", &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 9));
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        // The CRC-32 check value of the ASCII string "123456789" (ISO-HDLC / PNG).
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn a_chart_is_a_png_whose_pixels_decode_back() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let path = dir.path().join("chart.png");
        let bars = vec![
            Bar { label: "faster".into(), value: 1.8, mark: Some(1.9), anchor: false },
            Bar { label: "slower".into(), value: 0.6, mark: None, anchor: false },
            Bar { label: "anchor".into(), value: 1.2, mark: None, anchor: true },
        ];
        bar_chart(&path, "test", &bars, 1.0).expect("chart written");
        let bytes = std::fs::read(&path).expect("chart read");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let height = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes")) as usize;
        // Find the IDAT chunk, inflate it, and check the three bar colours are drawn.
        let mut at = 8;
        let mut idat = Vec::new();
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            if &bytes[at + 4..at + 8] == b"IDAT" {
                idat.extend_from_slice(&bytes[at + 8..at + 8 + len]);
            }
            at += 12 + len;
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&idat).expect("valid zlib stream");
        assert_eq!(raw.len(), (width + 1) * height);
        assert!(raw.contains(&FASTER) && raw.contains(&SLOWER) && raw.contains(&ANCHOR));
    }
}

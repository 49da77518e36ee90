//! A small SVG line chart of a decode batch sweep: tokens/s and ms per step against batch size
//! (log2 axis), so a bench run leaves a picture beside its JSON.

use std::fmt::Write as _;

use super::serving::SweepRow;

const W: f64 = 640.0;
const H: f64 = 360.0;
const PAD: f64 = 56.0;

fn polyline(rows: &[SweepRow], value: impl Fn(&SweepRow) -> f64, max: f64, x: impl Fn(usize) -> f64, colour: &str) -> String {
    let points: Vec<String> = rows
        .iter()
        .map(|r| format!("{:.1},{:.1}", x(r.batch), H - PAD - (value(r) / max) * (H - 2.0 * PAD)))
        .collect();
    format!("<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>", points.join(" "))
}

/// The chart, titled with `title` (GPU, commit, settings).
pub fn sweep_svg(rows: &[SweepRow], title: &str) -> String {
    let mut svg = format!("<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' font-family='sans-serif' font-size='12'>");
    let _ = write!(svg, "<rect width='100%' height='100%' fill='white'/><text x='{PAD}' y='20'>{}</text>", escape(title));
    if rows.is_empty() {
        return svg + "</svg>";
    }
    let max_b = rows.iter().map(|r| r.batch).max().unwrap_or(1).max(2) as f64;
    let x = |b: usize| PAD + ((b.max(1) as f64).log2() / max_b.log2()) * (W - 2.0 * PAD);
    let max_tps = rows.iter().map(|r| r.tokens_per_s).fold(1e-9, f64::max) * 1.1;
    let max_ms = rows.iter().map(|r| r.ms_per_step).fold(1e-9, f64::max) * 1.1;
    let _ = write!(
        svg,
        "<line x1='{PAD}' y1='{y}' x2='{x2}' y2='{y}' stroke='black'/><line x1='{PAD}' y1='{PAD}' x2='{PAD}' y2='{y}' stroke='black'/>",
        y = H - PAD,
        x2 = W - PAD
    );
    for r in rows {
        let _ = write!(svg, "<text x='{:.1}' y='{:.1}' text-anchor='middle'>{}</text>", x(r.batch), H - PAD + 16.0, r.batch);
    }
    let _ = write!(svg, "<text x='{:.1}' y='{:.1}' text-anchor='middle'>batch size</text>", W / 2.0, H - 12.0);
    svg += &polyline(rows, |r| r.tokens_per_s, max_tps, x, "#1f77b4");
    svg += &polyline(rows, |r| r.ms_per_step, max_ms, x, "#d62728");
    let _ = write!(
        svg,
        "<text x='{PAD}' y='40' fill='#1f77b4'>tokens/s (max {:.0})</text><text x='{:.1}' y='40' fill='#d62728'>ms per step (max {:.1})</text></svg>",
        max_tps / 1.1,
        W / 2.0,
        max_ms / 1.1
    );
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

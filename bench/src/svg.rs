//! Hand-written SVG plots: latency distributions as CDFs on a logarithmic time axis, so a
//! 2 ms hop and a 1 s polling wait fit one picture.

use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: &[&str] = &["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A CDF plot of several latency series (milliseconds); the legend shows p50 / p99.
pub fn cdf(title: &str, series: &[(String, Vec<f64>)]) -> String {
    let all: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|x| *x > 0.0).collect();
    // No sample at all (a phase without results) still draws an empty decade, not an endless axis.
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let lo = if lo.is_finite() { lo.max(0.01) } else { 1.0 };
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0);
    let (lo_dec, hi_dec) = (lo.log10().floor(), hi.log10().ceil());
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |ms: f64| LEFT + (ms.max(10f64.powf(lo_dec)).log10() - lo_dec) / (hi_dec - lo_dec) * plot_w;
    let y_of = |q: f64| TOP + (1.0 - q) * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>
"#,
        LEFT + plot_w / 2.0,
        esc(title)
    );
    // Grid: decades on x, quartiles and p99 on y.
    let mut d = lo_dec;
    while d <= hi_dec + 1e-9 {
        let x = x_of(10f64.powf(d));
        let label = if d < 0.0 { format!("{}", 10f64.powf(d)) } else { format!("{:.0}", 10f64.powf(d)) };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label} ms</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
        d += 1.0;
    }
    for q in [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
        let y = y_of(q);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            if q == 0.99 { "p99".to_string() } else { format!("{:.0}%", q * 100.0) }
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"##,
        LEFT + plot_w / 2.0,
        H - 10.0
    );
    for (i, (label, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let legend_y = TOP + 14.0 + i as f64 * 34.0;
        let summary = crate::stats::Summary::of(&v);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#555">n={} p50={:.1} p99={:.1} ms</text>"##,
            W - RIGHT + 10.0,
            W - RIGHT + 30.0,
            W - RIGHT + 35.0,
            legend_y + 4.0,
            esc(label),
            W - RIGHT + 35.0,
            legend_y + 18.0,
            summary.n,
            summary.p50,
            summary.p99
        );
        if v.is_empty() {
            continue;
        }
        // At most ~400 points per curve keeps the file small.
        let step = (v.len() / 400).max(1);
        let mut points = String::new();
        let n = v.len() as f64;
        for (k, x) in v.iter().enumerate().step_by(step).chain(std::iter::once((v.len() - 1, &v[v.len() - 1]))) {
            let _ = write!(points, "{:.1},{:.1} ", x_of(*x), y_of((k + 1) as f64 / n));
        }
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>"#);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_series_and_legend() {
        let svg = super::cdf("t <1>", &[("a".into(), vec![1.0, 2.0, 30.0]), ("b".into(), vec![])]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("t &lt;1&gt;") && svg.contains("polyline") && svg.contains("n=0"));
    }

    #[test]
    fn draws_an_empty_plot_when_no_series_has_a_sample() {
        let svg = super::cdf("nothing", &[("a".into(), vec![]), ("b".into(), vec![0.0])]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">1 ms</text>") && svg.contains(">10 ms</text>"), "one decade, 1 to 10 ms: {svg}");
    }
}

//! SVG pictures of a report, written next to its JSON: the login latency
//! CDFs (stack against the bare server, one at a time and in flight) and
//! the sustained-load curve.

use crate::curve::CurvePoint;
use crate::{LoginReport, Report};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}

/// `path` with its extension replaced by `-<suffix>.svg`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("bench");
    path.with_file_name(format!("{stem}-{suffix}.svg"))
}

/// The CDF points of a login report: (latency ms, fraction of logins).
fn cdf(r: &LoginReport) -> Vec<(f64, f64)> {
    r.percentiles_ms
        .iter()
        .enumerate()
        .map(|(i, ms)| (*ms, (i + 1) as f64 / 100.0))
        .collect()
}

/// One panel of CDFs; the x axis ends a little past the largest p99, so
/// one slow outlier does not squash the rest.
fn cdf_panel(area: &Panel, title: &str, series: &[(&str, &LoginReport)]) -> anyhow::Result<()> {
    let p99 = series
        .iter()
        .filter_map(|(_, r)| r.percentiles_ms.get(98).copied())
        .fold(0.0, f64::max);
    let x_max = (p99 * 1.25).max(0.1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0f64..1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("login latency, ms")
        .y_desc("fraction of logins")
        .draw()
        .map_err(err)?;
    for (i, (name, r)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<_> = cdf(r).into_iter().filter(|(x, _)| *x <= x_max).collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(err)?
            .label(format!("{name} (p50 {:.2} ms)", r.latency.p50_ms))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// The series of `candidates` that have figures to draw.
fn with_figures<'a>(
    candidates: [(&'static str, &'a Option<LoginReport>); 3],
) -> Vec<(&'static str, &'a LoginReport)> {
    candidates
        .into_iter()
        .filter_map(|(name, r)| {
            r.as_ref()
                .filter(|r| !r.percentiles_ms.is_empty())
                .map(|r| (name, r))
        })
        .collect()
}

/// The login latency CDFs: one at a time on the left, in flight on the
/// right. None when the report has no login figures.
fn logins_svg(report: &Report, path: &Path) -> anyhow::Result<Option<PathBuf>> {
    let one = with_figures([
        ("stack", &report.login_sequential),
        ("bare server", &report.baseline_sequential),
        ("stack over TLS", &report.tls_login_sequential),
    ]);
    let many = with_figures([
        ("stack", &report.login),
        ("bare server", &report.baseline_login),
        ("stack over TLS", &report.tls_login),
    ]);
    if one.is_empty() && many.is_empty() {
        return Ok(None);
    }
    let in_flight = many.first().map(|(_, r)| r.concurrency).unwrap_or(0);
    let out = beside(path, "logins");
    {
        let root = SVGBackend::new(&out, (1100, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((1, 2));
        cdf_panel(&panels[0], "logins one at a time", &one)?;
        cdf_panel(&panels[1], &format!("logins, {in_flight} in flight"), &many)?;
        root.present().map_err(err)?;
    }
    Ok(Some(out))
}

/// A named line of the curve: its value at each point, and its colour.
type Line = (&'static str, fn(&CurvePoint) -> f64, RGBColor);

/// One panel of the load curve: each of `lines` (name, value, colour)
/// against the number of portals; a legend when more than one.
fn curve_panel(
    area: &Panel,
    title: &str,
    y_desc: &str,
    points: &[CurvePoint],
    lines: &[Line],
) -> anyhow::Result<()> {
    let x_max = points.iter().map(|p| p.portals).max().unwrap_or(1) as f64 + 0.5;
    // a label every half portal, written at the whole ones only
    let x_labels = 2 * x_max as usize;
    let whole = |x: &f64| {
        if (x - x.round()).abs() < 1e-6 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    let y_max = lines
        .iter()
        .flat_map(|(_, f, _)| points.iter().map(f))
        .fold(0.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5f64..x_max, 0f64..y_max.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(x_labels)
        .x_label_formatter(&whole)
        .x_desc("portals")
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    for &(name, f, color) in lines {
        let xy: Vec<_> = points.iter().map(|p| (p.portals as f64, f(p))).collect();
        chart
            .draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(xy.into_iter().map(|c| Circle::new(c, 4, color.filled())))
            .map_err(err)?;
    }
    if lines.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// The load curve: latency at the fixed load (left) and the most logins
/// per second (right), against the number of portals.
fn curve_svg(points: &[CurvePoint], path: &Path) -> anyhow::Result<Option<PathBuf>> {
    if points.is_empty() {
        return Ok(None);
    }
    let out = beside(path, "curve");
    let (rate, in_flight) = (points[0].rate, points[0].saturated.concurrency);
    {
        let root = SVGBackend::new(&out, (1100, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((1, 2));
        curve_panel(
            &panels[0],
            &format!("latency at {rate:.0} logins/s offered"),
            "login latency, ms",
            points,
            &[
                ("p50", |p| p.paced.latency.p50_ms, COLORS[0]),
                ("p99", |p| p.paced.latency.p99_ms, COLORS[1]),
            ],
        )?;
        curve_panel(
            &panels[1],
            &format!("most logins/s, {in_flight} in flight"),
            "logins per second",
            points,
            &[("logins/s", |p| p.saturated.logins_per_second, COLORS[2])],
        )?;
        root.present().map_err(err)?;
    }
    Ok(Some(out))
}

/// Write every picture the report has figures for, beside `json`; the
/// files written.
pub fn write_svgs(report: &Report, json: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    written.extend(logins_svg(report, json)?);
    written.extend(curve_svg(&report.curve, json)?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{percentiles_ms, summarize};
    use std::time::Duration;

    fn login(ms: &[u64], concurrency: usize) -> LoginReport {
        let d: Vec<Duration> = ms.iter().map(|m| Duration::from_micros(*m * 100)).collect();
        LoginReport {
            logins: d.len(),
            concurrency,
            failed: 0,
            latency: summarize(&d),
            logins_per_second: 1000.0,
            percentiles_ms: percentiles_ms(&d),
        }
    }

    #[test]
    fn pictures_are_written_beside_the_json_and_name_their_series() {
        let dir = std::env::temp_dir().join(format!("plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("bench.json");
        let samples: Vec<u64> = (10..60).collect();
        let report = Report {
            login_sequential: Some(login(&samples, 1)),
            baseline_sequential: Some(login(&samples[..20], 1)),
            login: Some(login(&samples, 100)),
            curve: [1, 2, 4]
                .iter()
                .map(|&portals| CurvePoint {
                    portals,
                    paced: login(&samples, 0),
                    rate: 500.0,
                    saturated: login(&samples, 100),
                    services: Vec::new(),
                })
                .collect(),
            ..Report::default()
        };
        let written = write_svgs(&report, &json).unwrap();
        assert_eq!(
            written,
            vec![dir.join("bench-logins.svg"), dir.join("bench-curve.svg")]
        );
        let logins = std::fs::read_to_string(&written[0]).unwrap();
        assert!(logins.starts_with("<svg"), "{}", &logins[..80]);
        for label in [
            "logins one at a time",
            "100 in flight",
            "bare server",
            "stack (p50",
        ] {
            assert!(logins.contains(label), "no {label:?} in the CDF picture");
        }
        let curve = std::fs::read_to_string(&written[1]).unwrap();
        for label in ["portals", "500 logins/s offered", "p99"] {
            assert!(curve.contains(label), "no {label:?} in the curve picture");
        }
        // nothing to draw: nothing written
        assert!(write_svgs(&Report::default(), &json).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! `herald-load report`: turns the JSON lines of a comparison run (`loadtest/compare.sh`) into
//! a markdown table (the median of the rounds, per scenario and server), a JSON summary, and
//! SVG plots: the latency CDF of each server in the broadcast scenarios and their delivery
//! rates.

use std::collections::BTreeMap;
use std::path::PathBuf;

use plotters::prelude::*;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct Args {
    /// The scenarios' JSON reports, one per line (`compare.sh` collects them).
    input: PathBuf,
    /// Directory for `summary.json`, `table.md` and the plots.
    #[arg(long)]
    out: PathBuf,
}

/// What a scenario's figure is, read from its report.
struct Figure {
    unit: &'static str,
    value: Option<f64>,
    /// Loss, duplicates, incomplete runs: printed next to the figure.
    note: String,
}

fn figure(r: &Value) -> Figure {
    let f = |k: &str| r[k].as_f64();
    let mut note = String::new();
    let lost = r["lost"].as_u64().unwrap_or(0);
    let dup = r["duplicated"].as_u64().unwrap_or(0);
    if lost > 0 || dup > 0 {
        note = format!("lost {lost}, dup {dup}");
    }
    if r["complete"] == json!(false) {
        add_note(&mut note, "incomplete");
    }
    match (r["scenario"].as_str().unwrap_or(""), r["rate"].is_null()) {
        ("idle", _) => Figure { unit: "B/conn", value: f("rss_bytes_per_conn"), note },
        ("broadcast", false) => Figure { unit: "p99 ms", value: r["latency"]["p99_ms"].as_f64(), note },
        ("broadcast", true) | ("targeted", _) => Figure { unit: "/s", value: f("deliveries_per_sec"), note },
        ("connect", _) => Figure { unit: "conn/s", value: f("per_sec"), note },
        ("storm", _) => {
            if r["all_resumed"] == json!(false) {
                add_note(&mut note, "not all resumed");
            }
            Figure { unit: "s to resume all", value: f("recovery_secs"), note }
        }
        _ => Figure { unit: "", value: None, note },
    }
}

/// Appends `what` to a comma-separated note.
fn add_note(note: &mut String, what: &str) {
    if !note.is_empty() {
        note.push_str(", ");
    }
    note.push_str(what);
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

pub fn run(args: &Args) {
    let text = std::fs::read_to_string(&args.input).unwrap_or_else(|e| panic!("{}: {e}", args.input.display()));
    let reports: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut servers: Vec<String> = Vec::new();
    // label → server → reports, in the order labels first appear.
    let mut labels: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for r in &reports {
        let label = r["label"].as_str().unwrap_or("").to_string();
        let server = r["server"].as_str().unwrap_or("?").to_string();
        if !labels.contains(&label) {
            labels.push(label.clone());
        }
        if !servers.contains(&server) {
            servers.push(server.clone());
        }
        by.entry((label, server)).or_default().push(r);
    }
    std::fs::create_dir_all(&args.out).expect("output directory");

    let mut table = format!("| scenario | {} |\n|---|{}\n", servers.join(" | "), "---|".repeat(servers.len()));
    let mut summary = Vec::new();
    for label in &labels {
        let mut row = format!("| {label} |");
        for server in &servers {
            let Some(rs) = by.get(&(label.clone(), server.clone())) else {
                row.push_str(" — |");
                continue;
            };
            let figs: Vec<Figure> = rs.iter().map(|r| figure(r)).collect();
            let unit = figs.first().map_or("", |f| f.unit);
            let values: Vec<f64> = figs.iter().filter_map(|f| f.value).collect();
            let notes: Vec<&str> = figs.iter().map(|f| f.note.as_str()).filter(|n| !n.is_empty()).collect();
            let m = median(values.clone());
            let shown = m.map_or("n/a".to_string(), |v| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") });
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            row.push_str(&format!(" {shown} {unit}{notes} |"));
            summary.push(json!({"label": label, "server": server, "unit": unit, "median": m, "rounds": values,
                                "notes": notes.trim()}));
        }
        table.push_str(&row);
        table.push('\n');
    }
    std::fs::write(args.out.join("table.md"), &table).expect("table.md");
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary).expect("json"))
        .expect("summary.json");
    print!("{table}");

    for label in labels.iter().filter(|l| l.starts_with("M2") || l.starts_with("M3")) {
        let curves: Vec<(String, Vec<(f64, f64)>)> = servers
            .iter()
            .filter_map(|s| {
                // The round with the median p99 stands for the server.
                let mut rs = by.get(&(label.clone(), s.clone()))?.clone();
                rs.sort_by(|a, b| {
                    let p = |r: &Value| r["latency"]["p99_ms"].as_f64().unwrap_or(f64::MAX);
                    p(a).total_cmp(&p(b))
                });
                let r = rs.get(rs.len() / 2)?;
                let points =
                    r["latency"]["cdf"].as_array()?.iter().filter_map(|p| Some((p[1].as_f64()?, p[0].as_f64()?)));
                Some((s.clone(), points.collect()))
            })
            .collect();
        let file = args.out.join(format!("latency-cdf-{}.svg", slug(label)));
        if let Err(e) = cdf_plot(&file, &format!("{label}: publish→receive latency"), &curves) {
            eprintln!("{}: {e}", file.display());
        }
    }
    let rates: Vec<(String, Vec<(String, f64)>)> = labels
        .iter()
        .filter(|l| l.starts_with("M2"))
        .map(|l| {
            let per_server = servers
                .iter()
                .filter_map(|s| {
                    let rs = by.get(&(l.clone(), s.clone()))?;
                    Some((s.clone(), median(rs.iter().filter_map(|r| r["deliveries_per_sec"].as_f64()).collect())?))
                })
                .collect();
            (l.clone(), per_server)
        })
        .collect();
    let file = args.out.join("deliveries-per-sec.svg");
    if let Err(e) = rate_plot(&file, &rates, &servers) {
        eprintln!("{}: {e}", file.display());
    }
}

fn slug(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

const COLOURS: [RGBColor; 4] =
    [RGBColor(0, 114, 178), RGBColor(213, 94, 0), RGBColor(0, 158, 115), RGBColor(204, 121, 167)];

/// Latency (ms, log scale) against the share of deliveries, one line per server.
fn cdf_plot(
    file: &PathBuf,
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let max = curves.iter().flat_map(|(_, p)| p.iter().map(|&(ms, _)| ms)).fold(1.0f64, f64::max);
    let root = SVGBackend::new(file, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((0.01f64..max * 1.2).log_scale(), 0f64..1f64)?;
    chart.configure_mesh().x_desc("latency, ms").y_desc("share of deliveries").draw()?;
    for (i, (server, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().map(|&(ms, q)| (ms.max(0.01), q)), colour.stroke_width(2)))?
            .label(server.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

/// Deliveries per second in each M2 scenario, one bar per server.
fn rate_plot(
    file: &PathBuf,
    rates: &[(String, Vec<(String, f64)>)],
    servers: &[String],
) -> Result<(), Box<dyn std::error::Error>> {
    let max = rates.iter().flat_map(|(_, r)| r.iter().map(|&(_, v)| v)).fold(1.0f64, f64::max);
    let groups = rates.len().max(1);
    let width = servers.len().max(1) + 1;
    let root = SVGBackend::new(file, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("M2 broadcast: deliveries per second", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..groups * width, 0f64..max * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups * width)
        .x_label_formatter(&|x| {
            if x % width == servers.len() / 2 {
                rates.get(x / width).map_or(String::new(), |r| r.0.clone())
            } else {
                String::new()
            }
        })
        .y_desc("deliveries/s")
        .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .draw()?;
    for (si, server) in servers.iter().enumerate() {
        let colour = COLOURS[si % COLOURS.len()];
        let bars = rates.iter().enumerate().filter_map(|(g, (_, r))| {
            let v = r.iter().find(|(s, _)| s == server)?.1;
            let x = g * width + si;
            Some(Rectangle::new([(x, 0.0), (x + 1, v)], colour.filled()))
        });
        chart
            .draw_series(bars)?
            .label(server.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

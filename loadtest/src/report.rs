//! `herald-load report`: turns the JSON lines of a comparison run (`loadtest/compare.sh`) into
//! a markdown table (the median of the rounds, per scenario and server), the broadcast figures
//! as ratios to the floor of the same round (`herald-load floor`), the publish-answer
//! latencies, a JSON summary, and SVG plots: the latency CDF of each server in the broadcast
//! scenarios and their delivery rates.

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
        // The floor stands for a broadcast: its rate flat out, its p99 at a pace.
        ("floor", true) => Figure { unit: "/s", value: f("deliveries_per_sec"), note },
        ("floor", false) => Figure { unit: "p99 ms", value: r["latency"]["p99_ms"].as_f64(), note },
        ("connect", _) => Figure { unit: "conn/s", value: f("per_sec"), note },
        ("topics", _) => {
            // Published: what is left once the topics are forgotten, against the baseline.
            if let Some(over) = f("rss_forgotten_over_baseline") {
                add_note(&mut note, &format!("forgotten: RSS {:+.0} % of baseline", over * 100.0));
            }
            if r["failed"].as_u64().unwrap_or(0) > 0 {
                add_note(&mut note, &format!("{} failed", r["failed"]));
            }
            Figure { unit: "B/topic", value: f("rss_bytes_per_topic"), note }
        }
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

/// The floor report a broadcast report is read against: the same round, the same pace (flat
/// out, or the same rate).
fn floor_for<'a>(r: &Value, floors: &[&'a Value]) -> Option<&'a Value> {
    floors.iter().copied().find(|f| f["round"] == r["round"] && f["rate"] == r["rate"])
}

/// A server's figure over the floor's: how many times the floor's rate (flat out) or the
/// floor's p99 latency (at a pace) the server's is.
fn vs_floor(r: &Value, floor: &Value) -> Option<f64> {
    let (s, f) = (figure(r).value?, figure(floor).value?);
    (f > 0.0).then_some(s / f)
}

fn shown(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") })
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
    let all: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    // The floor is no server: it gets a section of its own, not a column.
    let (floors, reports): (Vec<&Value>, Vec<&Value>) = all.iter().partition(|r| r["scenario"] == "floor");
    let mut servers: Vec<String> = Vec::new();
    // label → server → reports, in the order labels first appear.
    let mut labels: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for &r in &reports {
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
            let mut notes: Vec<&str> = Vec::new();
            // Rounds that say the same thing say it once.
            for n in figs.iter().map(|f| f.note.as_str()).filter(|n| !n.is_empty()) {
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
            let m = median(values.clone());
            let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
            row.push_str(&format!(" {} {unit}{notes} |", shown(m)));
            let ratios: Vec<f64> = rs.iter().filter_map(|r| vs_floor(r, floor_for(r, &floors)?)).collect();
            let publish = |k: &str| median(rs.iter().filter_map(|r| r["publish_latency"][k].as_f64()).collect());
            summary.push(json!({"label": label, "server": server, "unit": unit, "median": m, "rounds": values,
                                "notes": notes.trim(), "vs_floor": median(ratios.clone()), "vs_floor_rounds": ratios,
                                "publish_p50_ms": publish("p50_ms"), "publish_p99_ms": publish("p99_ms")}));
        }
        table.push_str(&row);
        table.push('\n');
    }
    table.push_str(&floor_tables(&labels, &servers, &by, &floors, &mut summary));
    table.push_str(&publish_table(&labels, &servers, &by));
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

type ByLabel<'a> = BTreeMap<(String, String), Vec<&'a Value>>;

/// The floor's own figures (median of the rounds) and every broadcast figure over the floor
/// of its round: empty without floor reports.
fn floor_tables(
    labels: &[String],
    servers: &[String],
    by: &ByLabel,
    floors: &[&Value],
    summary: &mut Vec<Value>,
) -> String {
    if floors.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n**Floor** (`herald-load floor`: no server; one thread pinned to CPU 0 sends the SSE frame of a \
         delivery to every loopback socket once per round, readers on CPU 1)\n\n\
         | floor | deliveries/s | send ns mean | send ns p99 | round ms p50 | latency p50 ms | latency p99 ms | EAGAIN |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut floor_labels: Vec<&str> = Vec::new();
    for f in floors {
        let l = f["label"].as_str().unwrap_or("");
        if !floor_labels.contains(&l) {
            floor_labels.push(l);
        }
    }
    for l in floor_labels {
        let rs: Vec<&Value> = floors.iter().copied().filter(|f| f["label"] == l).collect();
        let m =
            |path: &[&str]| median(rs.iter().filter_map(|r| path.iter().fold(*r, |v, k| &v[*k]).as_f64()).collect());
        out.push_str(&format!(
            "| {l} | {} | {} | {} | {} | {} | {} | {} |\n",
            shown(m(&["deliveries_per_sec"])),
            shown(m(&["send_ns", "mean"])),
            shown(m(&["send_ns", "p99"])),
            shown(m(&["round_duration", "p50_ms"])),
            shown(m(&["latency", "p50_ms"])),
            shown(m(&["latency", "p99_ms"])),
            m(&["eagain"]).map_or("n/a".to_string(), |v| format!("{v:.0}")),
        ));
        summary.push(json!({"label": l, "server": "floor", "unit": figure(rs[0]).unit,
                            "median": median(rs.iter().filter_map(|r| figure(r).value).collect()),
                            "rounds": rs.iter().filter_map(|r| figure(r).value).collect::<Vec<_>>()}));
    }
    out.push_str(&format!(
        "\n**Relative to the floor of the same round** (median of the rounds; flat out: deliveries/s over the \
         floor's, above 1 is faster than one `send` per delivery; at a pace: p99 latency over the floor's)\n\n\
         | scenario | {} |\n|---|{}\n",
        servers.join(" | "),
        "---|".repeat(servers.len())
    ));
    for label in labels {
        let broadcast = servers.iter().any(|s| {
            by.get(&(label.clone(), s.clone())).is_some_and(|rs| rs.iter().any(|r| r["scenario"] == "broadcast"))
        });
        if !broadcast {
            continue;
        }
        let mut row = format!("| {label} |");
        for server in servers {
            let ratios: Vec<f64> = by
                .get(&(label.clone(), server.clone()))
                .map(|rs| rs.iter().filter_map(|r| vs_floor(r, floor_for(r, floors)?)).collect())
                .unwrap_or_default();
            match median(ratios) {
                Some(v) => row.push_str(&format!(" {v:.2}× |")),
                None => row.push_str(" — |"),
            }
        }
        out.push_str(&row);
        out.push('\n');
    }
    out
}

/// Publish-answer latency (write of a request → its whole answer), p50 / p99 ms, median of
/// the rounds, for every scenario that publishes.
fn publish_table(labels: &[String], servers: &[String], by: &ByLabel) -> String {
    let mut out = format!(
        "\n**Publish-answer latency**, p50 / p99 ms (median of the rounds)\n\n| scenario | {} |\n|---|{}\n",
        servers.join(" | "),
        "---|".repeat(servers.len())
    );
    let mut any = false;
    for label in labels {
        let mut row = format!("| {label} |");
        let mut has = false;
        for server in servers {
            let rs = by.get(&(label.clone(), server.clone()));
            let m =
                |k: &str| median(rs.map(|rs| rs.iter().filter_map(|r| r["publish_latency"][k].as_f64()).collect())?);
            match (m("p50_ms"), m("p99_ms")) {
                (Some(p50), Some(p99)) => {
                    has = true;
                    row.push_str(&format!(" {p50:.3} / {p99:.3} |"));
                }
                _ => row.push_str(" — |"),
            }
        }
        if has {
            any = true;
            out.push_str(&row);
            out.push('\n');
        }
    }
    if any { out } else { String::new() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_read_against_the_floor_of_their_round_and_pace() {
        let floors = [
            json!({"scenario": "floor", "round": 1, "rate": null, "deliveries_per_sec": 1000.0}),
            json!({"scenario": "floor", "round": 2, "rate": null, "deliveries_per_sec": 2000.0}),
            json!({"scenario": "floor", "round": 2, "rate": 5.0, "latency": {"p99_ms": 4.0}}),
        ];
        let floors: Vec<&Value> = floors.iter().collect();
        let flat = json!({"scenario": "broadcast", "round": 2, "rate": null, "deliveries_per_sec": 3000.0});
        let paced = json!({"scenario": "broadcast", "round": 2, "rate": 5.0, "latency": {"p99_ms": 10.0}});
        let unmatched = json!({"scenario": "broadcast", "round": 3, "rate": null, "deliveries_per_sec": 1.0});
        assert_eq!(vs_floor(&flat, floor_for(&flat, &floors).unwrap()), Some(1.5));
        assert_eq!(vs_floor(&paced, floor_for(&paced, &floors).unwrap()), Some(2.5));
        assert!(floor_for(&unmatched, &floors).is_none());
    }
}

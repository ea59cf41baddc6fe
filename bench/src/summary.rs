//! Targets, and the runs put side by side: each target's figure in every run and its median,
//! by database, and each measurement's median by database.

use std::collections::BTreeMap;

/// How a target's figure reads.
#[derive(Clone, Copy)]
pub enum Unit {
    /// A share, in percent (of a bound, or of what is allowed).
    Percent,
    /// A ratio, e.g. p99 over p50.
    Times,
    PerSecond,
    Ms,
    Mb,
    Us,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Times => "×",
            Unit::PerSecond => "/s",
            Unit::Ms => "ms",
            Unit::Mb => "MB",
            Unit::Us => "µs",
        }
    }

    fn parse(name: &str) -> Unit {
        [Unit::Percent, Unit::Times, Unit::PerSecond, Unit::Ms, Unit::Mb, Unit::Us]
            .into_iter()
            .find(|unit| unit.name() == name)
            .unwrap_or(Unit::Times)
    }

    pub fn show(self, value: f64) -> String {
        match self {
            Unit::Percent => format!("{value:.0}%"),
            Unit::Times => format!("{value:.1}×"),
            Unit::PerSecond => format!("{value:.0}/s"),
            Unit::Ms => format!("{value:.1} ms"),
            Unit::Mb => format!("{value:.1} MB"),
            Unit::Us => format!("{value:.1} µs"),
        }
    }
}

/// One target: what it asks, the figure it is judged on (a ratio to something measured in
/// the same run wherever the machine's speed matters), its limit, and the figure in words.
pub struct Target {
    pub asks: String,
    pub value: f64,
    pub limit: f64,
    pub at_most: bool,
    pub unit: Unit,
    /// What was measured, for a reader (e.g. "98.3/s of 164.8/s").
    pub figure: String,
}

impl Target {
    pub fn at_least(asks: impl Into<String>, value: f64, limit: f64, unit: Unit, figure: impl Into<String>) -> Target {
        Target { asks: asks.into(), value, limit, at_most: false, unit, figure: figure.into() }
    }

    pub fn at_most(asks: impl Into<String>, value: f64, limit: f64, unit: Unit, figure: impl Into<String>) -> Target {
        Target { asks: asks.into(), value, limit, at_most: true, unit, figure: figure.into() }
    }

    /// A latency within what is allowed, judged as its share of that (at most 100%).
    pub fn within(
        asks: impl Into<String>,
        latency: std::time::Duration,
        allowed: std::time::Duration,
        figure: String,
    ) -> Target {
        let share = 100.0 * latency.as_secs_f64() / allowed.as_secs_f64();
        Target::at_most(asks, share, 100.0, Unit::Percent, figure)
    }

    fn holds(value: f64, limit: f64, at_most: bool) -> bool {
        if at_most { value <= limit } else { value >= limit }
    }

    pub fn met(&self) -> bool {
        Target::holds(self.value, self.limit, self.at_most)
    }

    /// The figure, with what it was measured from where that says more.
    fn measured(&self) -> String {
        match self.figure.is_empty() {
            true => self.unit.show(self.value),
            false => format!("{} ({})", self.unit.show(self.value), self.figure),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.asks,
            "measured": self.measured(),
            "value": self.value,
            "limit": self.limit,
            "at_most": self.at_most,
            "unit": self.unit.name(),
            "met": self.met(),
        })
    }
}

/// Prints one run's targets.
pub fn print_targets(targets: &[Target]) {
    println!("\n| target | measured | met |");
    println!("|---|---|---|");
    for target in targets {
        let met = if target.met() { "yes" } else { "no" };
        println!("| {} | {} | {met} |", target.asks, target.measured());
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The reports of `database`'s runs.
fn of<'a>(runs: &'a [(String, serde_json::Value)], database: &'a str) -> impl Iterator<Item = &'a serde_json::Value> {
    runs.iter().filter(move |(d, _)| d == database).map(|(_, report)| report)
}

/// The names (`name` of each entry of the list `list`) over all reports, in the order they
/// first appear.
fn first_seen(runs: &[(String, serde_json::Value)], list: &str, name: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, report) in runs {
        for entry in report[list].as_array().into_iter().flatten() {
            let each = entry[name].as_str().unwrap_or_default().to_owned();
            if !names.contains(&each) {
                names.push(each);
            }
        }
    }
    names
}

/// The entries of the list `list` named `wanted` in `database`'s reports, run by run.
fn entries<'a>(
    runs: &'a [(String, serde_json::Value)],
    database: &'a str,
    list: &str,
    name: &str,
    wanted: &str,
) -> Vec<&'a serde_json::Value> {
    of(runs, database)
        .flat_map(|report| report[list].as_array().into_iter().flatten())
        .filter(|entry| entry[name].as_str() == Some(wanted))
        .collect()
}

/// The runs' reports (database, report), in the order they ran: prints each target's
/// figures and median by database, then each measurement's medians by database, and returns
/// the same as JSON.
pub fn summarize(runs: &[(String, serde_json::Value)]) -> serde_json::Value {
    let mut databases: Vec<&str> = Vec::new();
    for (database, _) in runs {
        if !databases.contains(&database.as_str()) {
            databases.push(database);
        }
    }
    let targets_json = targets(runs, &databases);
    let measurements_json = measurements(runs, &databases);
    serde_json::json!({ "targets": targets_json, "measurements": measurements_json })
}

/// What the table calls a database.
fn title(database: &str) -> &'static str {
    if database == "postgres" { "PostgreSQL" } else { "SQLite" }
}

/// Prints each target's figures and median by database; the same as JSON.
fn targets(runs: &[(String, serde_json::Value)], databases: &[&str]) -> Vec<serde_json::Value> {
    let names = first_seen(runs, "targets", "target");
    let header: String = databases.iter().map(|d| format!(" {} (each run) | median | met |", title(d))).collect();
    println!("\n| target |{header}");
    println!("|---|{}", "---|---|---|".repeat(databases.len()));
    let mut targets_json = Vec::new();
    for name in &names {
        let mut cells = String::new();
        let mut by_database = serde_json::Map::new();
        for database in databases {
            let found = entries(runs, database, "targets", "target", name);
            let Some(last) = found.last() else {
                cells.push_str(" – | – | – |");
                continue;
            };
            let unit = Unit::parse(last["unit"].as_str().unwrap_or_default());
            let (limit, at_most) =
                (last["limit"].as_f64().unwrap_or(f64::NAN), last["at_most"].as_bool() == Some(true));
            let values: Vec<f64> = found.iter().filter_map(|target| target["value"].as_f64()).collect();
            let median = median(&values);
            let met = Target::holds(median, limit, at_most);
            let each: Vec<String> = values.iter().map(|v| unit.show(*v)).collect();
            let yes = if met { "yes" } else { "no" };
            cells.push_str(&format!(" {} | {} | {yes} |", each.join(", "), unit.show(median)));
            by_database.insert(
                database.to_string(),
                serde_json::json!({
                    "values": values,
                    "measured": found.iter().map(|t| t["measured"].clone()).collect::<Vec<_>>(),
                    "median": median,
                    "limit": limit,
                    "at_most": at_most,
                    "unit": unit.name(),
                    "met": met,
                }),
            );
        }
        println!("| {name} |{cells}");
        targets_json.push(serde_json::json!({ "target": name, "by_database": by_database }));
    }
    targets_json
}

/// Prints each measurement's medians by database (rates, latencies, CPU per operation); the
/// same as JSON.
fn measurements(runs: &[(String, serde_json::Value)], databases: &[&str]) -> Vec<serde_json::Value> {
    let labels = first_seen(runs, "measurements", "measurement");
    let header: String = databases.iter().map(|d| format!(" {} per second | p50 ms | p99 ms |", title(d))).collect();
    println!("\n| measurement (medians of the runs) |{header}");
    println!("|---|{}", "---|---|---|".repeat(databases.len()));
    let mut measurements_json = Vec::new();
    for label in &labels {
        let mut cells = String::new();
        let mut cpu_cells = Vec::new();
        let mut by_database = serde_json::Map::new();
        for database in databases {
            let rows = entries(runs, database, "measurements", "measurement", label);
            let figure = |key: &str| {
                let values: Vec<f64> = rows.iter().filter_map(|row| row[key].as_f64()).collect();
                (!values.is_empty()).then(|| median(&values))
            };
            let shown = |value: Option<f64>, digits: usize| value.map(|v| format!("{v:.digits$}")).unwrap_or_default();
            let (rate, p50, p99) = (figure("per_second"), figure("p50_ms"), figure("p99_ms"));
            cells.push_str(&format!(" {} | {} | {} |", shown(rate, 1), shown(p50, 1), shown(p99, 1)));
            // CPU per operation by process, medians.
            let mut cpu: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for row in &rows {
                for (process, micros) in row["cpu_us_per_operation"].as_object().into_iter().flatten() {
                    cpu.entry(process.clone()).or_default().extend(micros.as_f64());
                }
            }
            let cpu: BTreeMap<String, f64> =
                cpu.into_iter().map(|(process, values)| (process, median(&values))).collect();
            if !cpu.is_empty() {
                let total: f64 = cpu.values().sum();
                let each: Vec<String> = cpu.iter().map(|(process, micros)| format!("{process} {micros:.0}")).collect();
                cpu_cells.push(format!("{}: {} (total {total:.0})", title(database), each.join(", ")));
            }
            by_database.insert(
                database.to_string(),
                serde_json::json!({ "per_second": rate, "p50_ms": p50, "p99_ms": p99, "cpu_us_per_operation": cpu, "runs": rows.len() }),
            );
        }
        println!("| {label} |{cells}");
        if !cpu_cells.is_empty() {
            println!("| … CPU µs per operation, {} |{}", cpu_cells.join("; "), " | | |".repeat(databases.len()));
        }
        measurements_json.push(serde_json::json!({ "measurement": label, "by_database": by_database }));
    }
    measurements_json
}

//! The report as a table for people: one aligned line per check, then a verdict.

use std::fmt::Write;

use super::{Report, Status};

/// Renders `report` as text.
pub fn table(report: &Report) -> String {
    let name_width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(4).max(5);
    let mut out = String::new();
    let _ = writeln!(out, "{:<10} {:<name_width$} {:<6} DETAIL", "GROUP", "CHECK", "STATUS");
    for c in &report.checks {
        let status = match (c.status, c.required) {
            (Status::Ok, _) => "ok",
            (Status::Warn, _) => "warn",
            (Status::Fail, true) => "FAIL",
            (Status::Fail, false) => "fail",
        };
        let _ = writeln!(out, "{:<10} {:<name_width$} {:<6} {}", c.group, c.name, status, c.detail);
    }
    let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
    if failed.is_empty() {
        let _ = writeln!(out, "\nThis node can run the Skerry agent.");
    } else {
        let _ = writeln!(out, "\nMissing required: {}.", failed.join(", "));
    }
    out
}

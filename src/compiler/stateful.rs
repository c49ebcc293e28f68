//! `over` clauses → [`Stateful`].

use super::values::{self, describe};
use crate::ast::{AggOp, CmpOp, Over, Value};
use crate::diagnostic::{Diagnostic, DiagnosticKind, did_you_mean};
use crate::ruleset::{Period, Stateful, Transfer};
use crate::schema::NumUnit;

const AGGREGATES: &[&str] = &["count", "peers", "domains", "period", "transfer"];

fn range(op: CmpOp, v: &Value) -> Result<(u64, u64), Diagnostic> {
    let x = values::number(v, NumUnit::Count)?;
    Ok(match op {
        CmpOp::Eq => (x, x),
        CmpOp::Ge => (x, u64::MAX),
        CmpOp::Gt => (x.saturating_add(1), u64::MAX),
        CmpOp::Le => (0, x),
        CmpOp::Lt if x > 0 => (0, x - 1),
        CmpOp::Lt => {
            return Err(DiagnosticKind::NothingBelowZero.at(v.span));
        }
        CmpOp::Ne => {
            return Err(DiagnosticKind::AggregateNe.at(v.span));
        }
    })
}

/// Lowers an `over` clause, collecting every error in it.
pub(super) fn lower_over(over: &Over) -> Result<Stateful, Vec<Diagnostic>> {
    let mut errs = Vec::new();
    let mut s = Stateful::default();
    match values::number(&over.window, NumUnit::Duration) {
        Ok(0) => errs.push(DiagnosticKind::EmptyWindow.at(over.window.span)),
        Ok(w) => s.window_ms = w,
        Err(e) => errs.push(e),
    }
    for a in &over.aggregates {
        let name = a.name.name.as_str();
        let result: Result<(), Diagnostic> = (|| {
            match (name, &a.op) {
                ("count" | "peers" | "domains", AggOp::Cmp(op, v)) => {
                    let r = Some(range(*op, v)?);
                    let slot = match name {
                        "count" => &mut s.count,
                        "peers" => &mut s.peers,
                        _ => &mut s.domains,
                    };
                    if slot.is_some() {
                        return Err(DiagnosticKind::AggregateTwice { name }.at(a.span));
                    }
                    *slot = r;
                }
                ("period", AggOp::About { center, tolerance }) => {
                    let (every_ms, tolerance_ms) =
                        values::about(center, tolerance, NumUnit::Duration)?;
                    if every_ms == 0 {
                        return Err(DiagnosticKind::EmptyPeriod.at(center.span));
                    }
                    if tolerance_ms * 2 >= every_ms {
                        return Err(DiagnosticKind::ToleranceOverHalfPeriod.at(tolerance.span));
                    }
                    s.period = Some(Period {
                        every_ms,
                        tolerance_ms,
                    });
                }
                ("transfer", AggOp::About { center, tolerance }) => {
                    let (bytes, tolerance) = values::about(center, tolerance, NumUnit::Bytes)?;
                    s.transfer = Some(Transfer { bytes, tolerance });
                }
                ("count" | "peers" | "domains", AggOp::About { .. }) => {
                    return Err(DiagnosticKind::AggregateNeedsComparison { name }.at(a.span));
                }
                ("period" | "transfer", AggOp::Cmp(_, v)) => {
                    return Err(DiagnosticKind::AggregateNeedsAbout { name }
                        .at(a.span)
                        .secondary(v.span, format!("{} here", describe(v))));
                }
                _ => {
                    return Err(DiagnosticKind::UnknownAggregate {
                        name,
                        suggestion: did_you_mean(name, AGGREGATES.iter().copied()),
                        known: AGGREGATES,
                    }
                    .at(a.name.span));
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errs.push(e);
        }
    }
    if let Some(p) = s.period
        && p.every_ms > s.window_ms
    {
        errs.push(DiagnosticKind::WindowShorterThanPeriod.at(over.window.span));
    }
    if errs.is_empty() { Ok(s) } else { Err(errs) }
}

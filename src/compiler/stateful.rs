//! `over` clauses → [`Stateful`].

use super::values::{self, describe};
use crate::ast::{AggOp, CmpOp, Over, Value};
use crate::diagnostic::{Code, Diagnostic, did_you_mean};
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
            return Err(Diagnostic::new(
                Code::InvalidRange,
                v.span,
                "nothing is below 0",
            ));
        }
        CmpOp::Ne => {
            return Err(Diagnostic::new(
                Code::InvalidAggregate,
                v.span,
                "`!=` is not available for aggregates",
            )
            .hint("use `>=`, `>`, `<=`, `<` or `==`"));
        }
    })
}

/// Lowers an `over` clause, collecting every error in it.
pub(super) fn lower_over(over: &Over) -> Result<Stateful, Vec<Diagnostic>> {
    let mut errs = Vec::new();
    let mut s = Stateful::default();
    match values::number(&over.window, NumUnit::Duration) {
        Ok(0) => errs.push(Diagnostic::new(
            Code::InvalidNumber,
            over.window.span,
            "the window must be longer than 0",
        )),
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
                        return Err(Diagnostic::new(
                            Code::InvalidAggregate,
                            a.span,
                            format!("`{name}` is given twice"),
                        ));
                    }
                    *slot = r;
                }
                ("period", AggOp::About { center, tolerance }) => {
                    let (every_ms, tolerance_ms) =
                        values::about(center, tolerance, NumUnit::Duration)?;
                    if every_ms == 0 {
                        return Err(Diagnostic::new(
                            Code::InvalidNumber,
                            center.span,
                            "a period must be longer than 0",
                        ));
                    }
                    if tolerance_ms * 2 >= every_ms {
                        return Err(Diagnostic::new(
                            Code::InvalidNumber,
                            tolerance.span,
                            "the tolerance must be under half the period",
                        )
                        .hint("e.g. `period ~ 15m +- 10%`"));
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
                    return Err(Diagnostic::new(
                        Code::InvalidAggregate,
                        a.span,
                        format!("`{name}` is compared with a number"),
                    )
                    .hint(format!("e.g. `{name} >= 3`")));
                }
                ("period" | "transfer", AggOp::Cmp(_, v)) => {
                    return Err(Diagnostic::new(
                        Code::InvalidAggregate,
                        a.span,
                        format!("`{name}` takes `~ value +- tolerance`"),
                    )
                    .secondary(v.span, format!("{} here", describe(v)))
                    .hint(if name == "period" {
                        "e.g. `period ~ 15m +- 10%`"
                    } else {
                        "e.g. `transfer ~ 58.3 MB +- 0.5%`"
                    }));
                }
                _ => {
                    let mut d = Diagnostic::new(
                        Code::InvalidAggregate,
                        a.name.span,
                        format!("unknown aggregate `{name}`"),
                    );
                    d = match did_you_mean(name, AGGREGATES.iter().copied()) {
                        Some(n) => d.hint(format!("did you mean `{n}`?")),
                        None => d.hint(format!("aggregates are {}", AGGREGATES.join(", "))),
                    };
                    return Err(d);
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
        errs.push(
            Diagnostic::new(
                Code::InvalidAggregate,
                over.window.span,
                "the window is shorter than the period",
            )
            .hint("the window must hold several periods, e.g. `over 2h ... period ~ 15m +- 10%`"),
        );
    }
    if errs.is_empty() { Ok(s) } else { Err(errs) }
}

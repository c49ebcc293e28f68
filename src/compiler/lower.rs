//! Conditions: field resolution, type checking and lowering to [`Cond`].

use super::values::{self, describe};
use super::{ListEntry, ListValue};
use crate::ast::{CmpOp, Expr, Ident, PredOp, Predicate, SetRef, Value, ValueKind};
use crate::diagnostic::{Diagnostic, DiagnosticKind, did_you_mean};
use crate::ruleset::{AddrSet, Cond, DomainSet, merge_ranges};
use crate::schema::{FIELDS, Field, NumField, NumUnit, Side};
use std::collections::HashMap;
use std::sync::Arc;

type Lists = HashMap<String, ListEntry>;

/// Lowers a condition, collecting every error in it.
pub(super) fn lower(expr: &Expr, lists: &Lists) -> Result<Cond, Vec<Diagnostic>> {
    let mut errs = Vec::new();
    let cond = lower_expr(expr, lists, &mut errs);
    match cond {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs),
    }
}

fn lower_expr(expr: &Expr, lists: &Lists, errs: &mut Vec<Diagnostic>) -> Option<Cond> {
    match expr {
        Expr::And(parts, _) | Expr::Or(parts, _) => {
            let lowered: Vec<Option<Cond>> =
                parts.iter().map(|p| lower_expr(p, lists, errs)).collect();
            let lowered: Option<Vec<Cond>> = lowered.into_iter().collect();
            let lowered = lowered?.into_boxed_slice();
            Some(if matches!(expr, Expr::And(..)) {
                Cond::And(lowered)
            } else {
                Cond::Or(lowered)
            })
        }
        Expr::Not(inner, _) => Some(Cond::Not(Box::new(lower_expr(inner, lists, errs)?))),
        Expr::Pred(p) => match lower_pred(p, lists) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.push(e);
                None
            }
        },
    }
}

/// Maps words people bring from other tools onto ours, for "did you mean" hints.
/// The field likely meant, and whether it was found by renaming such words.
fn field_hint(name: &str) -> Option<(&'static str, bool)> {
    let normalized = name
        .replace("destination", "peer")
        .replace("source", "host")
        .replace("dst", "peer")
        .replace("src", "host")
        .replace("remote", "peer")
        .replace("local", "host")
        .replace("server", "peer")
        .replace("client", "host")
        .replace('_', ".");
    let names = FIELDS.iter().map(|(n, _)| *n);
    if let Some(s) = did_you_mean(&normalized, names.clone()) {
        return Some((s, normalized != name.replace('_', ".")));
    }
    did_you_mean(name, names).map(|s| (s, false))
}

fn unknown_field(f: &Ident) -> Diagnostic {
    let hint = field_hint(&f.name);
    DiagnosticKind::UnknownField {
        name: &f.name,
        suggestion: hint.map(|(s, _)| s),
        renamed: hint.is_some_and(|(_, r)| r),
    }
    .at(f.span)
    .label("not a field")
}

fn lower_pred(p: &Predicate, lists: &Lists) -> Result<Cond, Diagnostic> {
    let field = crate::schema::field(&p.field.name).ok_or_else(|| unknown_field(&p.field))?;
    match field {
        Field::Addr(side) => lower_addr(p, side, lists),
        Field::Num(nf) => lower_num(p, nf, lists),
        Field::Domain(side) => lower_domain(p, side, lists),
        Field::Flags => lower_flags(p),
    }
}

fn use_list<'a>(
    name: &Ident,
    lists: &'a Lists,
    field: &str,
) -> Result<Option<&'a ListValue>, Diagnostic> {
    match lists.get(&name.name) {
        Some(entry) => {
            entry.used.set(true);
            Ok(entry.value.as_ref())
        }
        None => Err(DiagnosticKind::UndefinedList {
            name: &name.name,
            suggestion: did_you_mean(&name.name, lists.keys().map(String::as_str)),
            field,
        }
        .at(name.span)),
    }
}

/// A list used with a field of the wrong kind, or broken by its own errors.
fn wrong_list(name: &Ident, list: Option<&ListValue>, want: &str) -> Diagnostic {
    match list {
        Some(l) => DiagnosticKind::ListKindMismatch {
            name: &name.name,
            holds: l.kind(),
            needs: want,
        }
        .at(name.span),
        // The list's own errors were reported where it is defined.
        None => DiagnosticKind::BrokenList { name: &name.name }.at(name.span),
    }
}

fn lower_addr(p: &Predicate, side: Side, lists: &Lists) -> Result<Cond, Diagnostic> {
    let (set, negate) = match &p.op {
        PredOp::Cmp(CmpOp::Eq, v) => (AddrSet::from_ranges(vec![values::addr_range(v)?]), false),
        PredOp::Cmp(CmpOp::Ne, v) => (AddrSet::from_ranges(vec![values::addr_range(v)?]), true),
        PredOp::In(s) | PredOp::NotIn(s) => {
            let negate = matches!(p.op, PredOp::NotIn(_));
            match s {
                SetRef::Literal(vals, _) => {
                    let ranges = vals
                        .iter()
                        .map(values::addr_range)
                        .collect::<Result<Vec<_>, _>>()?;
                    (AddrSet::from_ranges(ranges), negate)
                }
                SetRef::Single(v) => (AddrSet::from_ranges(vec![values::addr_range(v)?]), negate),
                SetRef::Named(n) => match use_list(n, lists, "addr")? {
                    Some(ListValue::Addresses(set)) => {
                        return Ok(Cond::Addr {
                            side,
                            set: set.clone(),
                            negate,
                        });
                    }
                    other => return Err(wrong_list(n, other, "addresses")),
                },
            }
        }
        _ => {
            return Err(DiagnosticKind::AddressOperator {
                field: &p.field.name,
            }
            .at(p.span));
        }
    };
    Ok(Cond::Addr {
        side,
        set: Arc::new(set),
        negate,
    })
}

fn num_ranges_of(values: &[Value], unit: NumUnit) -> Result<Vec<(u64, u64)>, Diagnostic> {
    values
        .iter()
        .map(|v| values::number_range(v, unit))
        .collect()
}

fn lower_num(p: &Predicate, field: NumField, lists: &Lists) -> Result<Cond, Diagnostic> {
    let unit = field.unit();
    let (mut ranges, negate) = match &p.op {
        PredOp::Cmp(op, v) => {
            let x = values::number(v, unit)?;
            match op {
                CmpOp::Eq => (vec![(x, x)], false),
                CmpOp::Ne => (vec![(x, x)], true),
                CmpOp::Lt if x == 0 => {
                    return Err(DiagnosticKind::NothingBelowZero.at(p.span));
                }
                CmpOp::Lt => (vec![(0, x - 1)], false),
                CmpOp::Le => (vec![(0, x)], false),
                CmpOp::Gt if x == u64::MAX => {
                    return Err(DiagnosticKind::NothingAbove.at(p.span));
                }
                CmpOp::Gt => (vec![(x + 1, u64::MAX)], false),
                CmpOp::Ge => (vec![(x, u64::MAX)], false),
            }
        }
        PredOp::In(s) | PredOp::NotIn(s) => {
            let negate = matches!(p.op, PredOp::NotIn(_));
            let ranges = match s {
                SetRef::Literal(vals, span) => {
                    if vals.is_empty() {
                        return Err(DiagnosticKind::EmptySet.at(*span));
                    }
                    num_ranges_of(vals, unit)?
                }
                SetRef::Single(v) => vec![values::number_range(v, unit)?],
                SetRef::Named(n) => match use_list(
                    n,
                    lists,
                    if unit == NumUnit::Port {
                        "port"
                    } else {
                        "number"
                    },
                )? {
                    Some(ListValue::Ports(r)) if unit == NumUnit::Port => r.clone(),
                    Some(ListValue::Numbers(vals)) => num_ranges_of(vals, unit).map_err(|e| {
                        e.secondary(n.span, format!("in list `{}`, used here", n.name))
                    })?,
                    other => {
                        return Err(wrong_list(
                            n,
                            other,
                            if unit == NumUnit::Port {
                                "ports"
                            } else {
                                "numbers"
                            },
                        ));
                    }
                },
            };
            (ranges, negate)
        }
        PredOp::About { center, tolerance } => {
            let (c, t) = values::about(center, tolerance, unit)?;
            (vec![(c.saturating_sub(t), c.saturating_add(t))], false)
        }
        PredOp::Matches(..) => {
            return Err(DiagnosticKind::NumberMatches {
                field: &p.field.name,
                unit,
            }
            .at(p.span));
        }
        PredOp::Has(_) => {
            return Err(DiagnosticKind::NumberHas {
                field: &p.field.name,
            }
            .at(p.span));
        }
    };
    Ok(Cond::Num {
        field,
        ranges: merge_ranges(&mut ranges).into(),
        negate,
    })
}

fn lower_domain(p: &Predicate, side: Side, lists: &Lists) -> Result<Cond, Diagnostic> {
    let mut set = DomainSet::default();
    let add = |v: &Value, set: &mut DomainSet| -> Result<(), Diagnostic> {
        let (suffix, name) = values::domain_pattern(v)?;
        if suffix {
            set.suffixes.insert(name.into());
        } else {
            set.exact.insert(name.into());
        }
        Ok(())
    };
    let negate = match &p.op {
        PredOp::Cmp(CmpOp::Eq | CmpOp::Ne, v) => {
            add(v, &mut set)?;
            matches!(p.op, PredOp::Cmp(CmpOp::Ne, _))
        }
        PredOp::In(s) | PredOp::NotIn(s) => {
            let negate = matches!(p.op, PredOp::NotIn(_));
            match s {
                SetRef::Literal(vals, _) => {
                    for v in vals {
                        add(v, &mut set)?;
                    }
                }
                SetRef::Single(v) => {
                    return Err(DiagnosticKind::DomainRange.at(v.span));
                }
                SetRef::Named(n) => match use_list(n, lists, "domain")? {
                    Some(ListValue::Domains(set)) => {
                        return Ok(Cond::Domain {
                            side,
                            set: set.clone(),
                            negate,
                        });
                    }
                    other => return Err(wrong_list(n, other, "domains")),
                },
            }
            negate
        }
        PredOp::Matches(re, span) => {
            let re = regex::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    let msg = e.to_string();
                    let last = msg.lines().last().unwrap_or("invalid").trim().to_string();
                    DiagnosticKind::InvalidRegex { error: &last }.at(*span)
                })?;
            return Ok(Cond::Regex { side, re });
        }
        PredOp::Cmp(_, v) => {
            return Err(DiagnosticKind::NameOperator {
                field: &p.field.name,
            }
            .at(p.span)
            .secondary(v.span, format!("{} here", describe(v))));
        }
        PredOp::About { .. } | PredOp::Has(_) => {
            return Err(DiagnosticKind::NameOperator {
                field: &p.field.name,
            }
            .at(p.span));
        }
    };
    Ok(Cond::Domain {
        side,
        set: Arc::new(set),
        negate,
    })
}

fn flag_bits(vals: &[Value]) -> Result<u8, Diagnostic> {
    let mut mask = 0;
    for v in vals {
        let bit = match &v.kind {
            ValueKind::Word(w) => crate::flow::tcp_flags::from_name(w),
            _ => None,
        };
        match bit {
            Some(b) => mask |= b,
            None => {
                return Err(DiagnosticKind::NotAFlag {
                    found: &describe(v),
                }
                .at(v.span));
            }
        }
    }
    Ok(mask)
}

fn lower_flags(p: &Predicate) -> Result<Cond, Diagnostic> {
    match &p.op {
        PredOp::Has(vals) => Ok(Cond::Flags {
            mask: flag_bits(vals)?,
            exact: false,
            negate: false,
        }),
        PredOp::Cmp(op @ (CmpOp::Eq | CmpOp::Ne), v) => Ok(Cond::Flags {
            mask: flag_bits(std::slice::from_ref(v))?,
            exact: true,
            negate: *op == CmpOp::Ne,
        }),
        _ => Err(DiagnosticKind::FlagsOperator {
            field: &p.field.name,
        }
        .at(p.span)),
    }
}

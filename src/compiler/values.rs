//! Literal conversion: quantities with units, addresses, networks, ranges, domain patterns.

use crate::ast::{Value, ValueKind};
use crate::diagnostic::{Diagnostic, DiagnosticKind};
use crate::schema::{NumUnit, addr_key};
use ipnet::IpNet;
use std::net::IpAddr;

/// Multiplier of a unit for a unit family, or why the unit does not fit.
fn unit_factor(unit: Option<&str>, family: NumUnit) -> Result<u128, DiagnosticKind<'_>> {
    let f = match (family, unit) {
        (NumUnit::Bytes, None | Some("B")) => 1,
        (NumUnit::Bytes, Some("KB" | "kB")) => 1_000,
        (NumUnit::Bytes, Some("MB")) => 1_000_000,
        (NumUnit::Bytes, Some("GB")) => 1_000_000_000,
        (NumUnit::Bytes, Some("TB")) => 1_000_000_000_000,
        (NumUnit::Bytes, Some("KiB")) => 1 << 10,
        (NumUnit::Bytes, Some("MiB")) => 1 << 20,
        (NumUnit::Bytes, Some("GiB")) => 1 << 30,
        (NumUnit::Bytes, Some("TiB")) => 1 << 40,
        (NumUnit::Duration, Some("ms")) => 1,
        (NumUnit::Duration, Some("s")) => 1_000,
        (NumUnit::Duration, Some("m")) => 60_000,
        (NumUnit::Duration, Some("h")) => 3_600_000,
        (NumUnit::Duration, Some("d")) => 86_400_000,
        (NumUnit::Duration, None) => {
            return Err(DiagnosticKind::DurationNeedsUnit);
        }
        (NumUnit::Bytes, Some(u)) => {
            return Err(DiagnosticKind::NotASizeUnit { unit: u });
        }
        (NumUnit::Duration, Some(u)) => {
            return Err(DiagnosticKind::NotATimeUnit { unit: u });
        }
        (_, None) => 1,
        (_, Some(u)) => return Err(DiagnosticKind::PlainNumberUnit { unit: u }),
    };
    Ok(f)
}

/// Converts decimal text times a factor to an integer, rounding to nearest.
fn scaled(number: &str, factor: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int: u128 = int.parse().ok()?;
    let mut value = int.checked_mul(factor)?;
    if !frac.is_empty() {
        let frac = &frac[..frac.len().min(18)];
        let denom = 10u128.pow(frac.len() as u32);
        let num: u128 = frac.parse().ok()?;
        value = value.checked_add((num * factor + denom / 2) / denom)?;
    }
    Some(value)
}

/// The inclusive upper limit of a unit family.
fn family_max(family: NumUnit) -> u64 {
    match family {
        NumUnit::Port => 65_535,
        NumUnit::Proto | NumUnit::Ttl => 255,
        _ => u64::MAX,
    }
}

/// A single numeric literal for a field of `family` (protocol names accepted for `Proto`).
pub fn number(v: &Value, family: NumUnit) -> Result<u64, Diagnostic> {
    match &v.kind {
        ValueKind::Quantity { number, unit } => {
            if unit.as_deref() == Some("%") {
                return Err(DiagnosticKind::PercentOutsideTolerance.at(v.span));
            }
            let factor = unit_factor(unit.as_deref(), family).map_err(|kind| kind.at(v.span))?;
            if number.contains('.')
                && matches!(
                    family,
                    NumUnit::Port | NumUnit::Proto | NumUnit::Ttl | NumUnit::Count
                )
            {
                return Err(DiagnosticKind::WholeNumber.at(v.span));
            }
            let max = family_max(family);
            match scaled(number, factor) {
                Some(x) if x <= u128::from(max) => Ok(x as u64),
                _ => Err(DiagnosticKind::OutOfRange { number, max }.at(v.span)),
            }
        }
        ValueKind::Word(w) if family == NumUnit::Proto => crate::flow::proto::from_name(w)
            .map(u64::from)
            .ok_or_else(|| {
                let names: Vec<&str> = crate::flow::proto::NAMES.iter().map(|(n, _)| *n).collect();
                DiagnosticKind::UnknownProtocol {
                    name: w,
                    suggestion: crate::diagnostic::did_you_mean(w, names.iter().copied()),
                    known: &names,
                }
                .at(v.span)
            }),
        _ => Err(DiagnosticKind::ExpectedNumber {
            unit: family,
            found: &describe(v),
        }
        .at(v.span)),
    }
}

/// The inclusive ranges a literal (number or `lo .. hi`) stands for.
pub fn number_range(v: &Value, family: NumUnit) -> Result<(u64, u64), Diagnostic> {
    if let ValueKind::Range(lo, hi) = &v.kind {
        let (a, b) = (number(lo, family)?, number(hi, family)?);
        if a > b {
            return Err(DiagnosticKind::InvertedRange.at(v.span));
        }
        return Ok((a, b));
    }
    let x = number(v, family)?;
    Ok((x, x))
}

/// Describes a literal for "found ..." messages.
pub fn describe(v: &Value) -> String {
    match &v.kind {
        ValueKind::Ipv4(s) | ValueKind::Ipv6(s) => format!("address `{s}`"),
        ValueKind::Cidr(s) => format!("network `{s}`"),
        ValueKind::Quantity {
            number,
            unit: Some(u),
        } => format!("`{number} {u}`"),
        ValueKind::Quantity { number, unit: None } => format!("number `{number}`"),
        ValueKind::Str(s) => format!("string \"{s}\""),
        ValueKind::Word(w) => format!("`{w}`"),
        ValueKind::Range(..) => "a range".into(),
    }
}

fn parse_addr(v: &Value, text: &str) -> Result<IpAddr, Diagnostic> {
    text.parse::<IpAddr>()
        .map_err(|_| DiagnosticKind::InvalidIp { text }.at(v.span))
}

/// The inclusive key range of an address, network or address range literal.
pub fn addr_range(v: &Value) -> Result<(u128, u128), Diagnostic> {
    match &v.kind {
        ValueKind::Ipv4(s) | ValueKind::Ipv6(s) => {
            let k = addr_key(parse_addr(v, s)?);
            Ok((k, k))
        }
        ValueKind::Cidr(s) => {
            let net: IpNet = s
                .parse()
                .map_err(|_| DiagnosticKind::InvalidNetwork { text: s }.at(v.span))?;
            if net.network() != net.addr() {
                return Err(DiagnosticKind::HostBits {
                    text: s,
                    network: &net.trunc().to_string(),
                }
                .at(v.span));
            }
            Ok((addr_key(net.network()), addr_key(net.broadcast())))
        }
        ValueKind::Range(lo, hi) => {
            let (a, _) = addr_range(lo)?;
            let (b, _) = addr_range(hi)?;
            let (la, lb) = (
                matches!(lo.kind, ValueKind::Ipv4(_)),
                matches!(hi.kind, ValueKind::Ipv4(_)),
            );
            if la != lb
                || !matches!(lo.kind, ValueKind::Ipv4(_) | ValueKind::Ipv6(_))
                || !matches!(hi.kind, ValueKind::Ipv4(_) | ValueKind::Ipv6(_))
            {
                return Err(DiagnosticKind::MixedFamilies.at(v.span));
            }
            if a > b {
                return Err(DiagnosticKind::InvertedAddressRange.at(v.span));
            }
            Ok((a, b))
        }
        _ => Err(DiagnosticKind::ExpectedAddress {
            found: &describe(v),
        }
        .at(v.span)),
    }
}

/// A domain pattern: `(is_suffix, lower-case name)`; `*.example.com` is a suffix.
pub fn domain_pattern(v: &Value) -> Result<(bool, String), Diagnostic> {
    let ValueKind::Str(s) = &v.kind else {
        return Err(DiagnosticKind::ExpectedDomain {
            found: &describe(v),
        }
        .at(v.span));
    };
    let lower = s.trim_end_matches('.').to_ascii_lowercase();
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, lower.clone()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(DiagnosticKind::InvalidDomain {
            pattern: s,
            name: &name,
        }
        .at(v.span));
    }
    Ok((suffix, name))
}

/// An `about` test, `center +- tolerance`: `(center, absolute tolerance)`; a `%` tolerance is
/// relative to the center and must stay under 100 %.
pub fn about(center: &Value, tolerance: &Value, family: NumUnit) -> Result<(u64, u64), Diagnostic> {
    let c = number(center, family)?;
    let t = match &tolerance.kind {
        ValueKind::Quantity {
            number: n,
            unit: Some(u),
        } if u == "%" => {
            let pct: f64 = n
                .parse()
                .map_err(|_| DiagnosticKind::InvalidPercentage.at(tolerance.span))?;
            if pct >= 100.0 {
                return Err(DiagnosticKind::ToleranceTooWide.at(tolerance.span));
            }
            (c as f64 * pct / 100.0).round() as u64
        }
        _ => number(tolerance, family)?,
    };
    Ok((c, t))
}

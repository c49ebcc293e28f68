//! Literal conversion: quantities with units, addresses, networks, ranges, domain patterns.

use crate::ast::{Value, ValueKind};
use crate::diagnostic::{Code, Diagnostic};
use crate::schema::{NumUnit, addr_key};
use ipnet::IpNet;
use std::net::IpAddr;

/// A unit that does not fit the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnitError {
    #[error("a duration needs a unit: `ms`, `s`, `m`, `h` or `d`")]
    DurationNeedsUnit,
    #[error("`{0}` is not a size unit; use B, KB, KiB, MB, MiB, GB, GiB")]
    NotASize(String),
    #[error("`{0}` is not a time unit; use ms, s, m, h, d")]
    NotATime(String),
    #[error("this field takes a plain number, not `{0}`")]
    PlainNumber(String),
}

/// Multiplier of a unit for a unit family, or why the unit does not fit.
fn unit_factor(unit: Option<&str>, family: NumUnit) -> Result<u128, UnitError> {
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
            return Err(UnitError::DurationNeedsUnit);
        }
        (NumUnit::Bytes, Some(u)) => {
            return Err(UnitError::NotASize(u.to_string()));
        }
        (NumUnit::Duration, Some(u)) => {
            return Err(UnitError::NotATime(u.to_string()));
        }
        (_, None) => 1,
        (_, Some(u)) => return Err(UnitError::PlainNumber(u.to_string())),
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
                return Err(Diagnostic::new(
                    Code::InvalidNumber,
                    v.span,
                    "a percentage is only valid as a tolerance",
                )
                .hint("write `field ~ value +- 5%`"));
            }
            let factor = unit_factor(unit.as_deref(), family)
                .map_err(|m| Diagnostic::new(Code::InvalidNumber, v.span, m.to_string()))?;
            if number.contains('.')
                && matches!(
                    family,
                    NumUnit::Port | NumUnit::Proto | NumUnit::Ttl | NumUnit::Count
                )
            {
                return Err(Diagnostic::new(
                    Code::InvalidNumber,
                    v.span,
                    "expected a whole number",
                ));
            }
            let max = family_max(family);
            match scaled(number, factor) {
                Some(x) if x <= u128::from(max) => Ok(x as u64),
                _ => Err(Diagnostic::new(
                    Code::InvalidNumber,
                    v.span,
                    format!("`{}` is out of range (at most {max})", number),
                )),
            }
        }
        ValueKind::Word(w) if family == NumUnit::Proto => crate::flow::proto::from_name(w)
            .map(u64::from)
            .ok_or_else(|| {
                let names: Vec<&str> = crate::flow::proto::NAMES.iter().map(|(n, _)| *n).collect();
                let mut d = Diagnostic::new(
                    Code::TypeMismatch,
                    v.span,
                    format!("unknown protocol `{w}`"),
                );
                d = match crate::diagnostic::did_you_mean(w, names.iter().copied()) {
                    Some(s) => d.hint(format!("did you mean `{s}`? Or write the protocol number")),
                    None => d.hint(format!(
                        "known names: {}; or write the protocol number",
                        names.join(", ")
                    )),
                };
                d
            }),
        _ => Err(Diagnostic::new(
            Code::TypeMismatch,
            v.span,
            format!("expected {}, found {}", family_desc(family), describe(v)),
        )),
    }
}

/// The inclusive ranges a literal (number or `lo .. hi`) stands for.
pub fn number_range(v: &Value, family: NumUnit) -> Result<(u64, u64), Diagnostic> {
    if let ValueKind::Range(lo, hi) = &v.kind {
        let (a, b) = (number(lo, family)?, number(hi, family)?);
        if a > b {
            return Err(Diagnostic::new(
                Code::InvalidRange,
                v.span,
                "the lower end is above the upper end",
            )
            .hint("write ranges as `low .. high`"));
        }
        return Ok((a, b));
    }
    let x = number(v, family)?;
    Ok((x, x))
}

/// Describes the expected literal of a unit family.
pub fn family_desc(family: NumUnit) -> &'static str {
    match family {
        NumUnit::Port => "a port number",
        NumUnit::Proto => "a protocol (`tcp`, `udp`, ... or a number)",
        NumUnit::Bytes => "a size (`1500`, `4 KiB`, `58.3 MB`)",
        NumUnit::Count => "a number",
        NumUnit::Duration => "a duration (`30 s`, `5 m`)",
        NumUnit::Ttl => "a TTL (0..255)",
    }
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
    text.parse::<IpAddr>().map_err(|_| {
        Diagnostic::new(
            Code::InvalidAddress,
            v.span,
            format!("`{text}` is not a valid IP address"),
        )
    })
}

/// The inclusive key range of an address, network or address range literal.
pub fn addr_range(v: &Value) -> Result<(u128, u128), Diagnostic> {
    match &v.kind {
        ValueKind::Ipv4(s) | ValueKind::Ipv6(s) => {
            let k = addr_key(parse_addr(v, s)?);
            Ok((k, k))
        }
        ValueKind::Cidr(s) => {
            let net: IpNet = s.parse().map_err(|_| {
                Diagnostic::new(
                    Code::InvalidAddress,
                    v.span,
                    format!("`{s}` is not a valid network"),
                )
                .hint("write networks as `10.0.0.0/8` or `2001:db8::/32`")
            })?;
            if net.network() != net.addr() {
                return Err(Diagnostic::new(
                    Code::InvalidAddress,
                    v.span,
                    format!("`{s}` has host bits set"),
                )
                .hint(format!("did you mean `{}`?", net.trunc())));
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
                return Err(Diagnostic::new(
                    Code::InvalidAddress,
                    v.span,
                    "an address range needs two addresses of the same family",
                ));
            }
            if a > b {
                return Err(Diagnostic::new(
                    Code::InvalidRange,
                    v.span,
                    "the first address is above the second",
                ));
            }
            Ok((a, b))
        }
        _ => Err(Diagnostic::new(
            Code::TypeMismatch,
            v.span,
            format!(
                "expected an address, network or address range, found {}",
                describe(v)
            ),
        )),
    }
}

/// A domain pattern: `(is_suffix, lower-case name)`; `*.example.com` is a suffix.
pub fn domain_pattern(v: &Value) -> Result<(bool, String), Diagnostic> {
    let ValueKind::Str(s) = &v.kind else {
        return Err(Diagnostic::new(
            Code::TypeMismatch,
            v.span,
            format!("expected a domain name in quotes, found {}", describe(v)),
        ));
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
        let mut d = Diagnostic::new(
            Code::InvalidDomain,
            v.span,
            format!("\"{s}\" is not a domain name or `*.suffix` pattern"),
        );
        if name.contains('*') {
            d = d.hint("a wildcard may only stand first, as `*.example.com`");
        } else if name.contains('/') || name.contains(':') {
            d = d.hint("write the host name only, without scheme, port or path");
        }
        return Err(d);
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
            let pct: f64 = n.parse().map_err(|_| {
                Diagnostic::new(
                    Code::InvalidNumber,
                    tolerance.span,
                    "not a valid percentage",
                )
            })?;
            if pct >= 100.0 {
                return Err(Diagnostic::new(
                    Code::InvalidNumber,
                    tolerance.span,
                    "a tolerance of 100% or more matches almost anything",
                )
                .hint("use a range instead: `field in low .. high`"));
            }
            (c as f64 * pct / 100.0).round() as u64
        }
        _ => number(tolerance, family)?,
    };
    Ok((c, t))
}

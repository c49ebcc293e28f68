//! Field value parsers shared by the readers: addresses, ports, protocols, TCP flags, times,
//! and a borrowed JSON scalar that any key may hold.
//!
//! Every parser returns a [`FieldError`] on failure: which field, the bad text (cut to a few
//! dozen characters, so one huge field cannot flood a log or be kept whole) and what was
//! expected; its message reads e.g. ``bad source address `1.2.3` ``. A JSON line that cannot
//! be read as a record at all is a [`JsonError`].

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::flow::time::parse_timestamp;
use crate::flow::{normalize_name, proto, tcp_flags};

/// Longest piece of input quoted in an error reason.
const SHOWN_MAX: usize = 60;

/// `s` cut to [`SHOWN_MAX`] bytes (on a character boundary) for an error message.
pub(super) fn shown(s: &str) -> Cow<'_, str> {
    if s.len() <= SHOWN_MAX {
        return Cow::Borrowed(s);
    }
    let mut end = SHOWN_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// Why one field of a record could not be read. The bad text is kept cut to a few dozen
/// characters (as it is shown), so an error never holds more than that of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A text field (a CSV column) that does not read as `field`.
    #[error("bad {field} `{text}`")]
    Text {
        /// What the field is, e.g. "source address", "TCP flags".
        field: &'static str,
        /// The text, cut for display.
        text: String,
    },
    /// A required text field that is empty.
    #[error("missing {field}")]
    Missing {
        /// What the field is, e.g. "source address".
        field: &'static str,
    },
    /// A JSON string value that does not read as what the key holds.
    #[error("bad `{key}` value `{text}`: expected {expected}")]
    JsonText {
        /// The JSON key.
        key: &'static str,
        /// The string, cut for display.
        text: String,
        /// What the key holds, e.g. "an IP address".
        expected: &'static str,
    },
    /// A JSON number out of range or of the wrong sort (negative, fractional) for the key.
    #[error("bad `{key}` value {number}: expected {expected}")]
    JsonNumber {
        /// The JSON key.
        key: &'static str,
        /// The number as JSON wrote it (as Rust prints it).
        number: String,
        /// What the key holds, e.g. "a port number 0-65535".
        expected: &'static str,
    },
    /// A JSON value of the wrong type for the key (an object where a number was expected...).
    #[error("bad `{key}`: expected {expected}, found {found}")]
    JsonType {
        /// The JSON key.
        key: &'static str,
        /// What the key holds.
        expected: &'static str,
        /// What was found: "null", "a boolean", "a list", "an object"...
        found: &'static str,
    },
}

impl FieldError {
    /// The field's name: the JSON key, or what a text field is ("source address").
    pub fn field(&self) -> &'static str {
        match self {
            FieldError::Text { field, .. } | FieldError::Missing { field } => field,
            FieldError::JsonText { key, .. }
            | FieldError::JsonNumber { key, .. }
            | FieldError::JsonType { key, .. } => key,
        }
    }
}

fn bad(field: &'static str, value: &str) -> FieldError {
    FieldError::Text {
        field,
        text: shown(value).into_owned(),
    }
}

/// Why a JSON line (flowprint's schema or goflow2's) is not a flow record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The line does not start with `{`.
    #[error("not a JSON object (a record line starts with `{{`)")]
    NotObject,
    /// The line is not valid JSON, or not an object of the expected shape.
    #[error("invalid JSON at column {column}: {message}")]
    Syntax {
        /// 1-based column (byte) of the line where the JSON reader stopped.
        column: usize,
        /// The JSON reader's message, without its position.
        message: String,
    },
    /// Invalid JSON where the reader gave no position.
    #[error("invalid JSON: {message}")]
    SyntaxAnywhere {
        /// The JSON reader's message.
        message: String,
    },
    /// A required key is absent or null.
    #[error("missing `{key}`")]
    Missing {
        /// The key, e.g. `src`.
        key: &'static str,
    },
    /// A key's value cannot be read.
    #[error(transparent)]
    Field(#[from] FieldError),
}

/// Protocol names nfdump prints (`nfdump -o csv`) beyond the ones rules know.
const NFDUMP_PROTO_NAMES: &[(&str, u8)] = &[
    ("ggp", 3),
    ("ipip", 4),
    ("ipv4", 4),
    ("st", 5),
    ("egp", 8),
    ("igp", 9),
    ("ipv6", 41),
    ("ipv6r", 43),
    ("ipv6f", 44),
    ("rsvp", 46),
    ("ipv6n", 59),
    ("ipv6o", 60),
    ("eigrp", 88),
    ("ospf", 89),
    ("etherip", 97),
    ("encap", 98),
    ("pim", 103),
    ("ipcomp", 108),
    ("vrrp", 112),
    ("l2tp", 115),
    ("isis", 124),
    ("udplite", 136),
    ("mpls", 137),
];

/// A protocol given as a number (`6`) or a name (`TCP`, `ICMP6`, `IPv6`; case-insensitive).
pub(super) fn parse_proto(s: &str) -> Result<u8, FieldError> {
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    proto::from_name(s)
        .or_else(|| {
            NFDUMP_PROTO_NAMES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|&(_, p)| p)
        })
        .ok_or_else(|| bad("protocol", s))
}

/// TCP flags as a number (`18`, `0x12`) or nfdump letters (`...AP.S.`, `.AP.SF`, `AS`).
pub(super) fn parse_tcp_flags(s: &str) -> Result<u8, FieldError> {
    if s.is_empty() {
        return Err(bad("TCP flags", s));
    }
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u8::from_str_radix(hex, 16).map_err(|_| bad("TCP flags", s));
    }
    let mut bits = 0u8;
    for b in s.bytes() {
        bits |= match b {
            b'.' => 0,
            b'C' => tcp_flags::CWR,
            b'E' => tcp_flags::ECE,
            b'U' => tcp_flags::URG,
            b'A' => tcp_flags::ACK,
            b'P' => tcp_flags::PSH,
            b'R' => tcp_flags::RST,
            b'S' => tcp_flags::SYN,
            b'F' => tcp_flags::FIN,
            _ => return Err(bad("TCP flags", s)),
        };
    }
    Ok(bits)
}

/// An IP address; IPv4-mapped IPv6 addresses become IPv4.
pub(super) fn parse_addr(s: &str, what: &'static str) -> Result<IpAddr, FieldError> {
    s.parse::<IpAddr>()
        .map(|a| a.to_canonical())
        .map_err(|_| bad(what, s))
}

/// An unsigned integer of type `T`.
pub(super) fn parse_uint<T: std::str::FromStr>(
    s: &str,
    what: &'static str,
) -> Result<T, FieldError> {
    s.parse::<T>().map_err(|_| bad(what, s))
}

/// A destination port, also nfdump's ICMP `type.code` form (`8.0` → 8*256+0).
pub(super) fn parse_dst_port(s: &str) -> Result<u16, FieldError> {
    if let Ok(p) = s.parse::<u16>() {
        return Ok(p);
    }
    let (t, c) = s
        .split_once('.')
        .ok_or_else(|| bad("destination port", s))?;
    match (t.parse::<u8>(), c.parse::<u8>()) {
        (Ok(t), Ok(c)) => Ok(u16::from(t) << 8 | u16::from(c)),
        _ => Err(bad("destination port", s)),
    }
}

/// A time in a text file: integer milliseconds since the epoch, decimal seconds since the
/// epoch (`1581109434.123`, nfdump's raw form), or a [`parse_timestamp`] date. nfdump's
/// "no time" value `0000-00-00 00:00:00.000` is 0.
pub(super) fn parse_time(s: &str, what: &'static str) -> Result<i64, FieldError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(ms) = parse_timestamp(s) {
        return Ok(ms);
    }
    if s.starts_with("0000-00-00") && s.bytes().all(|b| b"0-: .".contains(&b)) {
        return Ok(0);
    }
    parse_seconds(s).ok_or_else(|| bad(what, s))
}

/// Decimal seconds (`8.439`, `12`) as milliseconds; fractions beyond ms are truncated.
pub(super) fn parse_seconds(s: &str) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let neg = int.starts_with('-');
    let digits = int.strip_prefix('-').unwrap_or(int);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
        return None;
    }
    let secs: i64 = digits.parse().ok()?;
    let mut ms = 0i64;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += i64::from(b - b'0') * [100, 10, 1][i];
    }
    let total = secs.checked_mul(1000)?.checked_add(ms)?;
    Some(if neg { -total } else { total })
}

/// A JSON value as far as flow records need it, borrowing strings from the line when it can.
/// Objects are skipped without being built; lists keep at most [`Scalar::LIST_MAX`] items.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A number with a fraction or exponent.
    F64(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A list (of at most `LIST_MAX` items).
    List(Vec<Scalar<'a>>),
    /// A list longer than `LIST_MAX` (its items are skipped).
    LongList,
    /// An object (its contents are skipped).
    Object,
}

impl<'a> Scalar<'a> {
    /// The most list items kept; a longer list is not a flow field.
    pub(super) const LIST_MAX: usize = 16;

    /// What kind of value this is, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::U64(_) | Scalar::I64(_) | Scalar::F64(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::List(_) | Scalar::LongList => "a list",
            Scalar::Object => "an object",
        }
    }

    fn wrong(&self, key: &'static str, expected: &'static str) -> FieldError {
        let number = |number: String| FieldError::JsonNumber {
            key,
            number,
            expected,
        };
        match self {
            Scalar::Str(s) => FieldError::JsonText {
                key,
                text: shown(s).into_owned(),
                expected,
            },
            Scalar::U64(n) => number(n.to_string()),
            Scalar::I64(n) => number(n.to_string()),
            Scalar::F64(n) => number(n.to_string()),
            other => FieldError::JsonType {
                key,
                expected,
                found: other.kind(),
            },
        }
    }

    /// An unsigned integer that fits `T`, from a number or a decimal string.
    pub(super) fn uint<T: TryFrom<u64>>(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<T, FieldError> {
        let n = match self {
            Scalar::U64(n) => Some(*n),
            Scalar::F64(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 9.007_199_254_740_992e15 => {
                Some(*f as u64)
            }
            Scalar::Str(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        n.and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.wrong(key, expected))
    }

    /// A signed integer, from a number or a decimal string.
    pub(super) fn int(&self, key: &'static str, expected: &'static str) -> Result<i64, FieldError> {
        let n = match self {
            Scalar::U64(n) => i64::try_from(*n).ok(),
            Scalar::I64(n) => Some(*n),
            Scalar::F64(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
                Some(*f as i64)
            }
            Scalar::Str(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        n.ok_or_else(|| self.wrong(key, expected))
    }

    /// A time: an RFC 3339 / nfdump string, or integer milliseconds (number or string).
    pub(super) fn time_ms(&self, key: &'static str) -> Result<i64, FieldError> {
        const EXPECTED: &str = "an RFC 3339 time or integer milliseconds";
        match self {
            Scalar::Str(s) => {
                let s = s.trim();
                s.parse::<i64>()
                    .ok()
                    .or_else(|| parse_timestamp(s))
                    .ok_or_else(|| self.wrong(key, EXPECTED))
            }
            _ => self.int(key, EXPECTED),
        }
    }

    /// An IP address string.
    pub(super) fn addr(&self, key: &'static str) -> Result<IpAddr, FieldError> {
        match self {
            Scalar::Str(s) => s
                .trim()
                .parse::<IpAddr>()
                .map(|a| a.to_canonical())
                .map_err(|_| self.wrong(key, "an IP address")),
            _ => Err(self.wrong(key, "an IP address")),
        }
    }

    /// A protocol number or name.
    pub(super) fn proto(&self, key: &'static str) -> Result<u8, FieldError> {
        match self {
            Scalar::Str(s) => {
                parse_proto(s.trim()).map_err(|_| self.wrong(key, "a protocol name or number"))
            }
            _ => self.uint(key, "a protocol number 0-255"),
        }
    }

    /// TCP flags: a number, nfdump letters (`...AP.S.`), or a list of names (`["syn","ack"]`).
    pub(super) fn tcp_flags(&self, key: &'static str) -> Result<u8, FieldError> {
        const EXPECTED: &str = "a number, nfdump letters like `...AP.S.`, or flag names";
        match self {
            Scalar::Str(s) => parse_tcp_flags(s.trim()).map_err(|_| self.wrong(key, EXPECTED)),
            Scalar::List(items) => {
                let mut bits = 0u8;
                for item in items {
                    let bit = match item {
                        Scalar::Str(name) => tcp_flags::from_name(name.trim()),
                        _ => None,
                    };
                    bits |= bit.ok_or_else(|| item.wrong(key, "a TCP flag name like `syn`"))?;
                }
                Ok(bits)
            }
            _ => self.uint(key, "TCP flags 0-255"),
        }
    }

    /// A host name (normalized), or `None` for null / an empty string.
    pub(super) fn name(&self, key: &'static str) -> Result<Option<Arc<str>>, FieldError> {
        match self {
            Scalar::Null => Ok(None),
            Scalar::Str(s) => Ok(normalize_name(s)),
            _ => Err(self.wrong(key, "a host name string")),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

struct ScalarVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(match u64::try_from(v) {
            Ok(u) => Scalar::U64(u),
            Err(_) => Scalar::I64(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while items.len() < Scalar::LIST_MAX {
            match seq.next_element::<Scalar<'a>>()? {
                Some(item) => items.push(item),
                None => return Ok(Scalar::List(items)),
            }
        }
        if seq.next_element::<IgnoredAny>()?.is_none() {
            return Ok(Scalar::List(items));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::LongList)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

impl From<serde_json::Error> for JsonError {
    /// A `serde_json` error of one line: the column is kept, the (always 1) line dropped.
    fn from(e: serde_json::Error) -> JsonError {
        let msg = e.to_string();
        let message = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_owned(),
            None => msg,
        };
        if e.column() > 0 {
            JsonError::Syntax {
                column: e.column(),
                message,
            }
        } else {
            JsonError::SyntaxAnywhere { message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols() {
        assert_eq!(parse_proto("TCP"), Ok(6));
        assert_eq!(parse_proto("ICMP6"), Ok(58));
        assert_eq!(parse_proto("IPv6"), Ok(41));
        assert_eq!(parse_proto("17"), Ok(17));
        assert_eq!(
            parse_proto("256"),
            Err(FieldError::Text {
                field: "protocol",
                text: "256".into()
            })
        );
        assert_eq!(
            parse_proto("256").unwrap_err().to_string(),
            "bad protocol `256`"
        );
        assert!(parse_proto("").is_err());
    }

    #[test]
    fn flags() {
        assert_eq!(parse_tcp_flags("...AP.S."), Ok(0x1a));
        assert_eq!(parse_tcp_flags("CEUAPRSF"), Ok(0xff));
        assert_eq!(parse_tcp_flags(".AP.SF"), Ok(0x1b));
        assert_eq!(parse_tcp_flags("........"), Ok(0));
        assert_eq!(parse_tcp_flags("24"), Ok(24));
        assert_eq!(parse_tcp_flags("0x12"), Ok(0x12));
        assert!(parse_tcp_flags("...X....").is_err());
        assert!(parse_tcp_flags("").is_err());
        for bits in 0..=255u8 {
            assert_eq!(parse_tcp_flags(&tcp_flags::to_nfdump(bits)), Ok(bits));
        }
    }

    #[test]
    fn ports_and_times() {
        assert_eq!(parse_dst_port("443"), Ok(443));
        assert_eq!(parse_dst_port("8.0"), Ok(2048));
        assert_eq!(parse_dst_port("3.3"), Ok(771));
        assert!(parse_dst_port("256.0").is_err());
        assert!(parse_dst_port("65536").is_err());
        assert_eq!(parse_time("1581109434123", "t"), Ok(1_581_109_434_123));
        assert_eq!(parse_time("1581109434.123", "t"), Ok(1_581_109_434_123));
        assert_eq!(
            parse_time("2020-02-07 21:03:54", "t"),
            Ok(1_581_109_434_000)
        );
        assert_eq!(parse_time("0000-00-00 00:00:00.000", "t"), Ok(0));
        assert_eq!(
            parse_time("x", "start time"),
            Err(FieldError::Text {
                field: "start time",
                text: "x".into()
            })
        );
        assert_eq!(
            parse_time("x", "start time").unwrap_err().to_string(),
            "bad start time `x`"
        );
        assert_eq!(parse_seconds("8.439"), Some(8439));
        assert_eq!(parse_seconds("0.5"), Some(500));
        assert_eq!(parse_seconds("12"), Some(12_000));
        assert_eq!(parse_seconds("1."), None);
        assert_eq!(parse_seconds(".5"), None);
        assert_eq!(parse_seconds("99999999999999999999"), None);
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "é".repeat(100);
        let e = parse_addr(&long, "source address").unwrap_err();
        let FieldError::Text { field, text } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*field, "source address");
        assert!(text.len() <= SHOWN_MAX + '…'.len_utf8(), "{text}");
        assert!(text.ends_with('…'));
        let msg = e.to_string();
        assert!(msg.len() < 100, "{msg}");
        assert!(msg.ends_with("…`"));
        let e = Scalar::Str(Cow::Owned(long)).addr("src").unwrap_err();
        assert!(
            matches!(&e, FieldError::JsonText { key: "src", text, .. } if text.ends_with('…')),
            "{e:?}"
        );
    }

    #[test]
    fn scalars() {
        let v: Vec<Scalar> = serde_json::from_str(
            r#"[1, -2, 1.5, "x\"y", null, true, {"a": [1, {"b": 2}]}, ["syn", "ack"]]"#,
        )
        .unwrap();
        assert_eq!(v[0], Scalar::U64(1));
        assert_eq!(v[1], Scalar::I64(-2));
        assert_eq!(v[3], Scalar::Str(Cow::Owned("x\"y".into())));
        assert_eq!(v[6], Scalar::Object);
        assert_eq!(v[7].tcp_flags("f"), Ok(0x12));
        let e = v[1].uint::<u16>("src_port", "a port").unwrap_err();
        assert_eq!(
            e,
            FieldError::JsonNumber {
                key: "src_port",
                number: "-2".into(),
                expected: "a port"
            }
        );
        assert_eq!(e.to_string(), "bad `src_port` value -2: expected a port");
        assert_eq!(e.field(), "src_port");
        let e = v[6].addr("src").unwrap_err();
        assert_eq!(
            e,
            FieldError::JsonType {
                key: "src",
                expected: "an IP address",
                found: "an object"
            }
        );
        assert_eq!(
            e.to_string(),
            "bad `src`: expected an IP address, found an object"
        );
        let text = format!("[{}1]", "1,".repeat(100));
        let long: Scalar = serde_json::from_str(&text).unwrap();
        assert_eq!(long, Scalar::LongList);
    }
}

//! Timestamps as flow files write them, to and from milliseconds since the Unix epoch (UTC).
//!
//! Calendar arithmetic uses Howard Hinnant's `days_from_civil` / `civil_from_days`
//! (<https://howardhinnant.github.io/date_algorithms.html>), so no date crate is needed.

/// Milliseconds in a day.
const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (`m` in 1..=12, `d` in 1..=31).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(m);
    let d = i64::from(d);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// A cursor over the ASCII bytes of a timestamp.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    /// Exactly `n` decimal digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.pos.checked_add(n)?;
        let chunk = self.s.get(self.pos..end)?;
        let mut v = 0u32;
        for &b in chunk {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Some(v)
    }

    /// Consumes `b` if it is next.
    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos == self.s.len()
    }
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fff…][Z|±HH:MM]` to milliseconds since the epoch.
///
/// Accepts nfdump's `2020-02-07 21:03:54` and `2020-02-07 21:03:54.123` (no offset: taken as
/// UTC) and RFC 3339 (`2020-02-07T21:03:54Z`, `…54.123456Z`, `…54+01:00`). Fractions beyond
/// milliseconds are truncated. Plain integers are not timestamps here; returns `None` for
/// anything else, including out-of-range fields such as month 13 or February 30.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let mut c = Cursor {
        s: s.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let day = c.digits(2)?;
    if !(c.eat(b' ') || c.eat(b'T') || c.eat(b't')) {
        return None;
    }
    let hour = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let minute = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let second = c.digits(2)?;
    let mut millis = 0u32;
    if c.eat(b'.') {
        let mut n = 0usize;
        while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
            if n < 3 {
                millis = millis * 10 + u32::from(b - b'0');
            }
            n += 1;
            c.pos += 1;
        }
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_min: i64 = if c.at_end() || c.eat(b'Z') || c.eat(b'z') {
        0
    } else {
        let sign = match c.peek()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        c.pos += 1;
        let oh = c.digits(2)?;
        if !c.eat(b':') {
            return None;
        }
        let om = c.digits(2)?;
        if oh > 23 || om > 59 {
            return None;
        }
        sign * i64::from(oh * 60 + om)
    };
    if !c.at_end() {
        return None;
    }
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = i64::from(hour * 3600 + minute * 60 + second) - offset_min * 60;
    Some(days * MS_PER_DAY + secs * 1000 + i64::from(millis))
}

/// Formats milliseconds since the epoch as RFC 3339 UTC: `2019-06-12T10:00:01Z`, or
/// `2019-06-12T10:00:01.250Z` when there are milliseconds.
///
/// Years outside 0000–9999 are written with as many digits as they need (and a sign when
/// negative), which [`parse_timestamp`] does not read back.
pub fn format_rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rest = ms.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rest / 1000;
    let millis = rest % 1000;
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    if (0..=9999).contains(&y) {
        // The common case, digit by digit, without the formatting machinery: an inventory
        // write formats several timestamps per host.
        fn digits(out: &mut String, n: i64, width: u32) {
            for p in (0..width).rev() {
                out.push(char::from(b'0' + (n / 10i64.pow(p) % 10) as u8));
            }
        }
        let mut out = String::with_capacity(24);
        digits(&mut out, y, 4);
        out.push('-');
        digits(&mut out, i64::from(m), 2);
        out.push('-');
        digits(&mut out, i64::from(d), 2);
        out.push('T');
        digits(&mut out, hh, 2);
        out.push(':');
        digits(&mut out, mm, 2);
        out.push(':');
        digits(&mut out, ss, 2);
        if millis != 0 {
            out.push('.');
            digits(&mut out, millis, 3);
        }
        out.push('Z');
        return out;
    }
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    }
}

/// Why a text is not a duration for [`parse_duration_ms`]; `text` is the (trimmed) text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// A number without a unit.
    #[error("`{text}` needs a unit: ms, s, m, h or d")]
    NoUnit {
        /// The text.
        text: String,
    },
    /// The part before the unit is not a number.
    #[error("`{text}` is not a duration")]
    Number {
        /// The text.
        text: String,
    },
    /// A unit other than ms, s, m, h and d.
    #[error("unknown unit `{unit}` in `{text}`: use ms, s, m, h or d")]
    Unit {
        /// The unit as written.
        unit: String,
        /// The text.
        text: String,
    },
    /// More than 10^15 ms (about 31,700 years).
    #[error("`{text}` is too long")]
    TooLong {
        /// The text.
        text: String,
    },
    /// `none`, or a negative length, where a length is required ([`Dur`]).
    #[error("`{text}` is not a duration here")]
    NotHere {
        /// The text.
        text: String,
    },
    /// A negative length where `none` is allowed ([`MaybeDur`]).
    #[error("a duration cannot be negative")]
    Negative,
}

/// A length of time as people write it in flowprint's arguments and configuration: `250ms`,
/// `30s`, `15m`, `12h`, `7d` (fractions allowed: `1.5s`). The one duration type of what users
/// write (the serve configuration, the command line); inside, times are `i64` milliseconds.
/// `none` is refused: a setting that can be off is a [`MaybeDur`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub std::time::Duration);

/// A [`Dur`], or `none` (in YAML also `null`): a setting that can be off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MaybeDur(pub Option<std::time::Duration>);

impl Dur {
    /// In milliseconds.
    pub fn ms(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl MaybeDur {
    /// In milliseconds; `None` for `none`.
    pub fn ms(self) -> Option<i64> {
        self.0.map(|d| Dur(d).ms())
    }
}

impl std::str::FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Dur, DurationError> {
        match parse_duration_ms(s)? {
            Some(ms) if ms >= 0 => Ok(Dur(std::time::Duration::from_millis(ms as u64))),
            _ => Err(DurationError::NotHere {
                text: crate::text::printable(s.trim()).into_owned(),
            }),
        }
    }
}

impl std::str::FromStr for MaybeDur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<MaybeDur, DurationError> {
        match parse_duration_ms(s)? {
            None => Ok(MaybeDur(None)),
            Some(ms) if ms >= 0 => Ok(MaybeDur(Some(std::time::Duration::from_millis(ms as u64)))),
            Some(_) => Err(DurationError::Negative),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for MaybeDur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MaybeDur, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(MaybeDur(None)),
            Some(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Parses a duration: `30d`, `12h`, `15m`, `30s`, `500ms` (fractions allowed: `1.5s`), or
/// `none` (`Ok(None)`). Milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<Option<i64>, DurationError> {
    let s = s.trim();
    if s == "none" {
        return Ok(None);
    }
    let text = || s.to_owned();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| DurationError::NoUnit { text: text() })?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| DurationError::Number { text: text() })?;
    let ms = match unit.trim() {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 6e4,
        "h" => 3.6e6,
        "d" => 8.64e7,
        u => {
            return Err(DurationError::Unit {
                unit: u.to_owned(),
                text: text(),
            });
        }
    };
    let v = n * ms;
    if !v.is_finite() || v > 1e15 {
        return Err(DurationError::TooLong { text: text() });
    }
    Ok(Some(v as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn dur_and_maybe_dur_from_text_and_yaml() {
        use std::time::Duration;
        assert_eq!("1.5s".parse(), Ok(Dur(Duration::from_millis(1_500))));
        assert_eq!("2m".parse::<Dur>().map(Dur::ms), Ok(120_000));
        assert_eq!(
            "none".parse::<Dur>(),
            Err(DurationError::NotHere {
                text: "none".into()
            })
        );
        assert_eq!("none".parse(), Ok(MaybeDur(None)));
        assert_eq!(
            "7d".parse::<MaybeDur>().map(MaybeDur::ms),
            Ok(Some(604_800_000))
        );
        assert!(matches!(
            "soon".parse::<MaybeDur>(),
            Err(DurationError::NoUnit { .. } | DurationError::Number { .. })
        ));
        #[derive(serde::Deserialize)]
        struct C {
            every: Dur,
            idle: MaybeDur,
            off: MaybeDur,
        }
        let c: C = yaml_serde::from_str("every: 250ms\nidle: none\noff: null\n").unwrap();
        assert_eq!(c.every, Dur(Duration::from_millis(250)));
        assert_eq!((c.idle, c.off), (MaybeDur(None), MaybeDur(None)));
        let e = yaml_serde::from_str::<C>("every: none\nidle: 1s\noff: 1s\n")
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("`none` is not a duration here"),
            "{e}"
        );
    }

    #[test]
    fn durations_and_their_error_kinds() {
        assert_eq!(parse_duration_ms("1.5s"), Ok(Some(1500)));
        assert_eq!(parse_duration_ms(" 30d "), Ok(Some(2_592_000_000)));
        assert_eq!(parse_duration_ms("none"), Ok(None));
        let text = |s: &str| s.to_owned();
        assert_eq!(
            parse_duration_ms("30"),
            Err(DurationError::NoUnit { text: text("30") })
        );
        assert_eq!(
            parse_duration_ms("1.2.3s"),
            Err(DurationError::Number {
                text: text("1.2.3s")
            })
        );
        let e = parse_duration_ms("5y").unwrap_err();
        assert_eq!(
            e,
            DurationError::Unit {
                unit: text("y"),
                text: text("5y")
            }
        );
        assert_eq!(
            e.to_string(),
            "unknown unit `y` in `5y`: use ms, s, m, h or d"
        );
        assert_eq!(
            parse_duration_ms("99999999999d"),
            Err(DurationError::TooLong {
                text: text("99999999999d")
            })
        );
    }

    #[test]
    fn known_values() {
        // date -u -d '2020-02-07 21:03:54' +%s
        assert_eq!(
            parse_timestamp("2020-02-07 21:03:54"),
            Some(1_581_109_434_000)
        );
        assert_eq!(
            parse_timestamp("2020-02-07 21:03:54.123"),
            Some(1_581_109_434_123)
        );
        assert_eq!(
            parse_timestamp("2020-02-07T21:03:54Z"),
            Some(1_581_109_434_000)
        );
        assert_eq!(
            parse_timestamp("2020-02-07T21:03:54.123456Z"),
            Some(1_581_109_434_123)
        );
        assert_eq!(
            parse_timestamp("2020-02-07T22:03:54+01:00"),
            Some(1_581_109_434_000)
        );
        assert_eq!(
            parse_timestamp("2020-02-07T20:33:54.5-00:30"),
            Some(1_581_109_434_500)
        );
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1969-12-31T23:59:59.999Z"), Some(-1));
        assert_eq!(
            parse_timestamp("2000-02-29 00:00:00"),
            Some(951_782_400_000)
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "1581109434",
            "2020-02-07",
            "2020-02-07 21:03",
            "2020-13-07 21:03:54",
            "2020-00-07 21:03:54",
            "2020-02-30 21:03:54",
            "2019-02-29 21:03:54",
            "1900-02-29 00:00:00",
            "2020-02-07 24:00:00",
            "2020-02-07 21:60:00",
            "2020-02-07 21:03:61",
            "2020-02-07 21:03:54.",
            "2020-02-07 21:03:54Zjunk",
            "2020-02-07T21:03:54+1:00",
            "2020-02-07T21:03:54+01:60",
            "2020-02-07T21:03:54+0100",
            "2020-2-07 21:03:54",
            "0000-00-00 00:00:00.000",
            "２０２０-02-07 21:03:54",
            "2020-02-07 21:03:5\u{e9}",
        ] {
            assert_eq!(parse_timestamp(s), None, "{s:?}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_rfc3339(1_560_333_601_000), "2019-06-12T10:00:01Z");
        assert_eq!(
            format_rfc3339(1_560_333_601_250),
            "2019-06-12T10:00:01.250Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Never panics at the extremes.
        let _ = format_rfc3339(i64::MIN);
        let _ = format_rfc3339(i64::MAX);
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        let start = days_from_civil(1900, 1, 1);
        for z in start..start + 146_097 {
            let (y, m, d) = civil_from_days(z);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    proptest! {
        #[test]
        fn rfc3339_digit_by_digit_is_what_format_writes(ms in days_from_civil(0, 1, 1) * MS_PER_DAY
                                  ..days_from_civil(10_000, 1, 1) * MS_PER_DAY) {
            let (y, m, d) = civil_from_days(ms.div_euclid(MS_PER_DAY));
            let rest = ms.rem_euclid(MS_PER_DAY);
            let (secs, millis) = (rest / 1000, rest % 1000);
            let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
            let want = if millis == 0 {
                format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
            } else {
                format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
            };
            prop_assert_eq!(format_rfc3339(ms), want);
        }

        #[test]
        fn rfc3339_round_trip(ms in days_from_civil(0, 1, 1) * MS_PER_DAY
                                  ..days_from_civil(10_000, 1, 1) * MS_PER_DAY) {
            let s = format_rfc3339(ms);
            prop_assert_eq!(parse_timestamp(&s), Some(ms), "{}", s);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp(&s);
        }

        #[test]
        fn format_never_panics(ms in any::<i64>()) {
            let _ = format_rfc3339(ms);
        }
    }
}

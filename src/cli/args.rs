//! Values of command-line arguments shared by several commands: durations, and the library's
//! named values.

/// A parser of one of a library enum's named values (its `VALUES` and `FromStr`): `--help`
/// lists them with their help, anything else is refused with the list.
pub fn one_of<T>(
    values: &'static [(&'static str, &'static str)],
) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = flowprint::UnknownName> + Clone + Send + Sync + 'static,
{
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(values.iter().map(|(n, h)| PossibleValue::new(*n).help(*h)))
        .try_map(|s: String| s.parse::<T>())
}

/// A duration in milliseconds, or none.
#[derive(Debug, Clone, Copy)]
pub struct MaybeMs(pub Option<i64>);

/// Parses `30d`, `12h`, `15m`, `30s`, `500ms`, or `none`.
pub fn parse_duration_opt(s: &str) -> Result<MaybeMs, String> {
    flowprint::flow::time::parse_duration_ms(s)
        .map(MaybeMs)
        .map_err(|e| e.to_string())
}

/// A duration that must be longer than 0, or `none`: `what` names it in the error, `why` says
/// what 0 would do, `none_means` what `none` does.
fn parse_positive(s: &str, what: &str, why: &str, none_means: &str) -> Result<MaybeMs, String> {
    match parse_duration_opt(s)? {
        MaybeMs(Some(ms)) if ms <= 0 => Err(format!(
            "{what} must be longer than 0 (`{s}`{why}); `none` means {none_means}"
        )),
        d => Ok(d),
    }
}

/// [`parse_duration_opt`] for a half-life: `0` would divide by zero, and is refused rather than
/// taken to mean anything (`none` means no decay).
pub fn parse_half_life(s: &str) -> Result<MaybeMs, String> {
    parse_positive(s, "a half-life", "", "no decay")
}

/// [`parse_duration_opt`] for `--idle`: `0` would evict every host at once, and is refused
/// (`none` means never).
pub fn parse_idle(s: &str) -> Result<MaybeMs, String> {
    parse_positive(
        s,
        "an idle time",
        ": every host would be evicted at once",
        "never",
    )
}

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

use flowprint::flow::time::MaybeDur;

/// A duration that must be longer than 0, or `none`: `what` names it in the error, `why` says
/// what 0 would do, `none_means` what `none` does.
fn parse_positive(s: &str, what: &str, why: &str, none_means: &str) -> Result<MaybeDur, String> {
    match s.parse::<MaybeDur>().map_err(|e| e.to_string())? {
        MaybeDur(Some(d)) if d.is_zero() => Err(format!(
            "{what} must be longer than 0 (`{s}`{why}); `none` means {none_means}"
        )),
        d => Ok(d),
    }
}

/// A half-life: `0` would divide by zero, and is refused rather than taken to mean anything
/// (`none` means no decay).
pub fn parse_half_life(s: &str) -> Result<MaybeDur, String> {
    parse_positive(s, "a half-life", "", "no decay")
}

/// `--idle`: `0` would evict every host at once, and is refused (`none` means never).
pub fn parse_idle(s: &str) -> Result<MaybeDur, String> {
    parse_positive(
        s,
        "an idle time",
        ": every host would be evicted at once",
        "never",
    )
}

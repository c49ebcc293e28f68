//! flowprint: know which operating systems and software run on a network, from flow records
//! alone.
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! rule files ──parser──▶ AST (spans) ──compiler──▶ Ruleset (immutable, indexed, Send + Sync)
//!                                                        │
//! flow records ──flow::ingest──▶ Flow ──scan::Scanner (eval::Matcher ▶ Match ▶ infer::HostTable)──▶ HostSummary
//! ```
//!
//! [`scan::Scanner`] is the one per-flow path: everything that applies flows goes through it.
//!
//! ```
//! use flowprint::compiler::Compiler;
//! use flowprint::dns::DnsMap;
//! use flowprint::eval::LocalNets;
//! use flowprint::flow::{Flow, normalize_name, proto};
//! use flowprint::infer::HostTable;
//! use flowprint::scan::Scanner;
//! use std::sync::Arc;
//!
//! let mut compiler = Compiler::new();
//! compiler.add_source("mine", "mine.rules", r#"
//!     rule apple-captive {
//!         when  peer.domain == "captive.apple.com" and peer.port == 80
//!         then  os.family = "macOS" confidence 0.5, os.family = "iOS" confidence 0.5
//!     }
//! "#);
//! let compiled = compiler.compile();
//! assert_eq!(compiled.errors(), 0);
//!
//! let mut flow = Flow::new("192.168.1.20".parse().unwrap(), 50200,
//!                          "17.253.53.207".parse().unwrap(), 80, proto::TCP);
//! flow.dst_name = normalize_name("captive.apple.com");
//!
//! let mut scanner = Scanner::new(compiled.ruleset.clone(), Arc::new(LocalNets::default()),
//!                                HostTable::new());
//! let mut dns = DnsMap::new();
//! scanner.apply_learning(&flow, &mut dns);
//! let hosts = scanner.hosts().summaries(scanner.rules());
//! assert_eq!(hosts[0].host, "192.168.1.20");
//! assert_eq!(hosts[0].evidence[0].rule, "mine/apple-captive");
//! ```

#![warn(missing_docs)]

/// Gives a fieldless enum the names its values are written with (in command-line arguments and
/// configuration files) and a line of help for each: `VALUES`, `name()` and `FromStr` (whose
/// error, [`UnknownName`], lists the names). The command line builds its parsers from
/// `VALUES`, so the library needs no argument parser of its own.
macro_rules! named_values {
    ($ty:ident { $($variant:ident = $name:literal: $help:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value: its name and one line of help.
            pub const VALUES: &'static [(&'static str, &'static str)] = &[$(($name, $help)),+];

            /// The name of this value.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::UnknownName;
            fn from_str(s: &str) -> Result<$ty, $crate::UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err($crate::UnknownName {
                        name: $crate::text::printable(s).into_owned(),
                        values: $ty::VALUES.iter().map(|(n, _)| *n).collect(),
                    }),
                }
            }
        }
    };
}

/// A name that is none of a set's values (`named_values!`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not one of {}", values.join(", "))]
pub struct UnknownName {
    /// The name given.
    pub name: String,
    /// The names there are.
    pub values: Vec<&'static str>,
}

// The library's surface: what a program that embeds flowprint needs, re-exported here. The
// modules below hold the rest of each stage's types.
pub use compiler::{Compiled, Compiler};
pub use diagnostic::{Code, Diagnostic, Severity};
pub use dns::DnsMap;
pub use eval::LocalNets;
pub use flow::Flow;
pub use flow::ingest::{InputFormat, read_flows};
pub use infer::{HostSummary, HostTable};
pub use ruleset::Ruleset;
pub use scan::Scanner;
pub use sources::{Selection, Sources};
pub use store::RuleStore;

pub mod compiler;
pub mod diagnostic;
pub mod dns;
pub mod embedded {
    //! The bundled rule packs, embedded at build time from `rules/`.
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
pub mod eval;
pub mod flow;
pub mod infer;
pub mod inventory;
pub mod pack;
pub mod parser;
pub mod ruleset;
pub mod scan;
pub mod sources;
pub mod span;
pub mod store;

// Parts of the flowprint binary (its commands, its daemon, its benchmarks) and of its tests:
// public so that the binary and the tests can reach them, not an interface for others, and
// left out of the documentation.
#[doc(hidden)]
pub mod accuracy;
#[doc(hidden)]
pub mod ast;
#[doc(hidden)]
pub mod bench;
#[doc(hidden)]
pub mod collect;
#[doc(hidden)]
pub mod fleet;
#[doc(hidden)]
pub mod limits;
mod par;
#[doc(hidden)]
pub mod schema;
#[doc(hidden)]
pub mod serve;
#[doc(hidden)]
pub mod text;
#[doc(hidden)]
pub mod walk;

#[cfg(test)]
mod tests {
    use crate::flow::ingest::InputFormat;
    use crate::pack::generate::{Matching, Scheme, Transport};

    fn round_trip<T>(values: &[(&str, &str)], name: impl Fn(T) -> &'static str)
    where
        T: std::str::FromStr<Err = crate::UnknownName> + std::fmt::Debug,
    {
        for (n, _) in values {
            let v: T = n.parse().unwrap();
            assert_eq!(name(v), *n);
        }
        let e = "no\u{1b}such".parse::<T>().unwrap_err();
        assert_eq!(e.values, values.iter().map(|(n, _)| *n).collect::<Vec<_>>());
        assert!(!e.to_string().contains('\u{1b}'), "{e}");
    }

    #[test]
    fn named_values_parse_back_and_list_the_names() {
        round_trip(InputFormat::VALUES, InputFormat::name);
        round_trip(Transport::VALUES, Transport::name);
        round_trip(Scheme::VALUES, Scheme::name);
        round_trip(Matching::VALUES, Matching::name);
        assert_eq!("nfdump-csv".parse(), Ok(InputFormat::NfdumpCsv));
    }
}

//! flowprint: know which operating systems and software run on a network, from flow records
//! alone.
//!
//! The pipeline, one module per stage, data flowing one way:
//!
//! ```text
//! rule files ──parser──▶ AST (spans) ──compiler──▶ Ruleset (immutable, indexed, Send + Sync)
//!                                                        │
//! flow records ──flow::ingest──▶ Flow ──scan::Scanner (eval::Matcher ▶ Match ▶ infer::Inventory)──▶ HostSummary
//! ```
//!
//! [`scan::Scanner`] is the one per-flow path: everything that applies flows goes through it.
//!
//! ```
//! use flowprint::compiler::Compiler;
//! use flowprint::dns::DnsMap;
//! use flowprint::eval::LocalNets;
//! use flowprint::flow::{Flow, normalize_name, proto};
//! use flowprint::infer::Inventory;
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
//!                                Inventory::new());
//! let mut dns = DnsMap::new();
//! scanner.apply_learning(&flow, &mut dns);
//! let hosts = scanner.inventory().summaries(scanner.rules());
//! assert_eq!(hosts[0].host, "192.168.1.20");
//! assert_eq!(hosts[0].evidence[0].rule, "mine/apple-captive");
//! ```

#![warn(missing_docs)]

pub mod ast;
pub mod bench;
pub mod collect;
pub mod compiler;
pub mod diagnostic;
pub mod dns;
pub mod embedded {
    //! The bundled rule packs, embedded at build time from `rules/`.
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
pub mod eval;
pub mod evaluate;
pub mod fleet;
pub mod flow;
pub mod infer;
pub mod inventory;
pub mod limits;
pub mod pack;
mod par;
pub mod parser;
pub mod ruleset;
pub mod scan;
pub mod schema;
pub mod serve;
pub mod sources;
pub mod span;
pub mod store;
pub mod text;
pub mod walk;

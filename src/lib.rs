pub mod ast;
pub mod bench;
pub mod compiler;
pub mod diagnostic;
pub mod embedded {
    //! The bundled rule packs, embedded at build time from `rules/`.
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}
pub mod eval;
pub mod flow;
pub mod index;
pub mod infer;
pub mod pack;
pub mod parser;
pub mod ruleset;
pub mod schema;
pub mod span;

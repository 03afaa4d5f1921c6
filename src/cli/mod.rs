//! What the command-line subcommands do, kept in the library so tests can run it too.

pub mod demo;
pub mod search;

//! What the command-line subcommands do, kept in the library so tests can run it too.

pub mod daemon;
pub mod demo;
pub mod docs;
pub mod remote;
pub mod search;

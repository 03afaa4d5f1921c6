//! File transfer over HTTP (PROTOCOL.md §8): the upload server, and downloads with Push for
//! firewalled sources.

pub mod altlocs;
pub mod callback;
pub mod download;
pub mod limit;
pub mod magnet;
pub mod plan;
pub mod probe;
pub mod pushproxy;
pub mod records;
pub mod slots;
pub mod stall;
pub mod turns;
pub mod upload;

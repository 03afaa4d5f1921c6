//! File transfer over HTTP (PROTOCOL.md §8): the upload server, and downloads with Push for
//! firewalled sources.

pub mod download;
pub mod upload;

//! servent: a Gnutella 0.6 servent.
//!
//! Layers, from the bytes up: [`wire`] turns bytes into protocol values and back and knows
//! nothing above it. Everything else (handshake, overlay routing, the network shell, shares and
//! transfers) stands on it.

pub mod cli;
pub mod control;
pub mod handshake;
pub mod net;
pub mod overlay;
pub mod servent;
pub mod share;
pub mod sim;
pub mod store;
pub mod swarm;
pub mod text;
pub mod thex;
pub mod transfer;
pub mod wire;

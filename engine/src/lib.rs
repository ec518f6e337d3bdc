//! # kz-engine
//!
//! The engine of kz: the stack model and its loading ([`load`]), the dependency graph ([`graph`]),
//! planning ([`plan`]), applying ([`apply`]) and rendering ([`render`]). It defines the
//! [`provider::Transport`] and [`provider::Provider`] traits and never does host I/O itself:
//! it opens no socket and spawns no process. It reads stack files and the environment, and writes
//! state only through a [`apply::StateSink`].

pub mod apply;
pub mod diag;
pub mod drill;
pub mod graph;
pub mod interp;
pub mod lab;
pub mod load;
pub mod model;
pub mod ops;
pub mod overlay;
pub mod plan;
pub mod provider;
pub mod record;
pub mod render;
pub mod secrets;
pub mod units;
pub mod upload;
pub mod verify;

/// `2 * bytes` random hex digits, for markers no output can forge.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        // Fall back to the clock: the nonce only has to be unpredictable to the probed output.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8;
        }
    }
    hex::encode(buf)
}

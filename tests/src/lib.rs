//! Cross-crate integration and conformance tests of pseq live in `tests/tests/`. This library
//! holds what several of them share: running a real node process ([`node`]).

pub mod node;

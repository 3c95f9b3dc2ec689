//! Cross-crate integration and conformance tests of pseq live in `tests/tests/`. This library is
//! empty: it only gives the test files a crate to belong to.

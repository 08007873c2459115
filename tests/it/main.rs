//! All integration tests, linked into one test binary.
// A failed expectation is how a test reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
mod keys;
mod proxy;

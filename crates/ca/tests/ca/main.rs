//! Tests of the certificate authority through its public API.

#![allow(clippy::expect_used)]

mod common;
mod disk;
mod jwt;
mod rotation;
mod signing;

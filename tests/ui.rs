//! Compile-time behaviour of `#[push_channel]`: what compiles, and the exact
//! errors of every misuse (one per file in `ui/fail`, named after it).
//!
//! The `.stderr` files are pinned to the workspace's toolchain; regenerate
//! them with `TRYBUILD=overwrite cargo test --test ui` and review the diff.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}

# A thin menu over `cargo xtask` (`pip install rust-just` gives `just`).
# Everything here works without just: run the cargo command shown.

# list recipes
default:
    @just --list

# install missing prerequisites, then fmt, clippy, cargo-deny and all tests
test:
    cargo xtask test

# list prerequisites, found or missing
doctor:
    cargo xtask doctor

# install missing prerequisites only
prereqs:
    cargo xtask prereqs

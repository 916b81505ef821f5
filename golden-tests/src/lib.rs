//! Golden-file regression tests of everything edgec emits; the harness lives in `tests/`.

//! The edgec deployment bundle format.

//! The pure core of the edgec compiler.

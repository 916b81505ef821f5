//! The IoT Edge routing language: parsing, type checking and evaluation.

//! Linker shim (filled in by the capture issue).

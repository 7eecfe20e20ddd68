//! One conversion, end to end: inspect → plan → stream → graft → fixups → boot.

//! The target disk plan: partitions, sizes, what the graft adds; a printable value. (issue 3)

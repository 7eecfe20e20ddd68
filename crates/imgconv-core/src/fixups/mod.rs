//! Guest configuration fixups for the new hardware, each with a backup. (issue 4)

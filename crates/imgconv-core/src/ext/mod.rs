//! The ext engine: writing into the guest filesystem through the system's libext2fs. (issue 4)

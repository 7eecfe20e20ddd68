//! Copy the used blocks of the source filesystem into partition 1, sparse. (issue 3)

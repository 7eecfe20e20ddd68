//! Running e2fsprogs programs on the output (resize2fs to grow, e2fsck to replay a
//! journal) through the `file?offset=N` io option. (issue 3)

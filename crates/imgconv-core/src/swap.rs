//! Linux swap v1 signature for the swap partition. (issue 3)

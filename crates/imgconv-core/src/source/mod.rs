//! Source inspection: what is this image (bare filesystem or partitioned disk), which
//! filesystem, which guest, and which Xen-isms it carries. (issue 3)

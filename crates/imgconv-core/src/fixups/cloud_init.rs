//! cloud-init: a Xen guest from a public cloud (an AWS PV AMI) looks for its cloud's
//! metadata service on every boot (EC2: `http://169.254.169.254`), which does not answer
//! on the new hypervisor; depending on the version it waits minutes before it gives up,
//! and may then rewrite the network configuration for a fallback NIC. A drop-in
//! `/etc/cloud/cloud.cfg.d/99-imgconv-datasource.cfg` limits the datasources to
//! `NoCloud` (a seed the new host can provide) and `None` (boot without metadata). The
//! drop-in sorts last, so it wins over the image's own `datasource_list`; deleting it
//! restores the old behaviour. `keep_cloud_init` leaves cloud-init as it is.

use super::edit::{create, exists};
use super::{At, FixupContext, FixupError};
use crate::guestfs::NodeKind;
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;

const STEP: &str = "cloud-init";
const CONFIG: &str = "/etc/cloud/cloud.cfg";
const DROP_IN_DIR: &str = "/etc/cloud/cloud.cfg.d";
const DROP_IN: &str = "/etc/cloud/cloud.cfg.d/99-imgconv-datasource.cfg";

/// The drop-in's content.
pub const DROP_IN_TEXT: &str =
    "# Written by imgconv when this guest was converted from Xen to KVM: the\n\
# cloud metadata service of the old platform does not answer here. Delete this file to\n\
# let cloud-init probe every datasource again.\n\
datasource_list: [ NoCloud, None ]\n";

/// Limit cloud-init's datasources unless the caller keeps them.
pub fn limit_datasources(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let has_cloud_init = guest
        .stat(CONFIG)
        .at(STEP, CONFIG)?
        .is_some_and(|m| m.kind == NodeKind::File);
    if !has_cloud_init || exists(guest, STEP, DROP_IN)? {
        return Ok(());
    }
    if ctx.keep_cloud_init {
        report.warn("the guest runs cloud-init and it was left as it is (--keep-cloud-init): it probes its old cloud's metadata service at every boot");
        return Ok(());
    }
    guest
        .mkdir_p(DROP_IN_DIR, NodeAttrs::root(0o755, ctx.mtime))
        .at(STEP, DROP_IN_DIR)?;
    create(
        guest,
        report,
        STEP,
        DROP_IN,
        DROP_IN_TEXT.as_bytes(),
        NodeAttrs::root(0o644, ctx.mtime),
        "limited cloud-init's datasources to NoCloud and None (delete this file to undo; --keep-cloud-init leaves cloud-init alone)",
        "cloud-init would wait for the old cloud's metadata service on every boot, and it does not answer under KVM",
    )
}

//! The block check (see [`crate::blockcheck`]) as the conversion runs it: in its own
//! thread beside the stream, waited for before libext2fs writes anything; its findings
//! refused, or with `--repair` repaired in the output copy.

use crate::blockcheck;
use crate::output::{self, TempOutput};
use crate::progress::Progress;
use crate::report::Report;
use crate::{Error, Result};
use std::os::unix::fs::FileExt;

/// The block check running in its own thread (see [`crate::blockcheck`]).
pub(super) struct PendingCheck {
    thread: Option<
        std::thread::JoinHandle<std::result::Result<blockcheck::Findings, blockcheck::CheckError>>,
    >,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    path: std::path::PathBuf,
}

pub(super) fn start(region: crate::blockio::Region) -> PendingCheck {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = region.path().to_path_buf();
    let flag = std::sync::Arc::clone(&stop);
    let thread = std::thread::spawn(move || blockcheck::check(&region, &flag));
    PendingCheck {
        thread: Some(thread),
        stop,
        path,
    }
}

impl PendingCheck {
    /// Wait for the findings.
    pub(super) fn wait(mut self) -> Result<(std::path::PathBuf, blockcheck::Findings)> {
        let thread = self.thread.take().expect("waited for once");
        match thread.join() {
            Ok(r) => Ok((std::mem::take(&mut self.path), r?)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for PendingCheck {
    fn drop(&mut self) {
        // Not waited for (an error elsewhere): let the thread end soon.
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Clean findings pass; others are refused, or with `--repair` (sequential path, the
/// stream finished, nothing grafted yet) repaired in the copy by `e2fsck -fy` when that
/// keeps every file's content. Either way a limited check is noted. `source`: the
/// source's filesystem and block size when the findings are the source's (else they are
/// the copy's, after a journal replay).
pub(super) fn repair_or_refuse(
    repair: bool,
    out: &TempOutput,
    root_offset: u64,
    (path, findings): (std::path::PathBuf, blockcheck::Findings),
    source: Option<(&crate::blockio::Region, u64)>,
    report: &mut Report,
    progress: &mut dyn Progress,
) -> Result<()> {
    // Clean findings need no repair; unrepairable ones are refused.
    if findings.is_clean() || !(repair && findings.repairable()) {
        return refuse_unclean((path, findings), report, progress);
    }
    note_limited(&findings, report, progress);
    // Blocks the bitmaps call free were not streamed: copy them before e2fsck marks
    // them used, so the files keep their content.
    if let Some((src, bs)) = source {
        let mut buf = vec![0u8; bs as usize];
        for f in &findings.findings {
            if let blockcheck::Problem::Free { .. } = f.problem {
                copy_owned_blocks(src, out, root_offset, f.ino, &mut buf)?;
            }
        }
    }
    out.unclaimed(|| crate::e2fs_tools::repair(out.path(), root_offset, &*progress))??;
    report.change(
        "repair",
        "/",
        format!(
            "repaired the copied filesystem with e2fsck -fy: {}",
            findings.summary()
        ),
        "a repair was asked for and the block check found files sharing blocks or owning blocks the bitmaps call free; the input was not touched",
        None,
    );
    Ok(())
}

/// Copy every block inode `ino` of the source owns into the output, as it is.
fn copy_owned_blocks(
    src: &crate::blockio::Region,
    out: &TempOutput,
    root_offset: u64,
    ino: u32,
    buf: &mut [u8],
) -> Result<()> {
    let Ok(fs) = crate::ext::read::RawFs::open_for_check(src.clone()) else {
        return Ok(());
    };
    let Ok(map) = fs.inode(ino).and_then(|i| fs.owned_blocks(&i)) else {
        return Ok(());
    };
    let bs = buf.len() as u64;
    let blocks = map
        .runs
        .iter()
        .flat_map(|r| r.pblk..r.pblk + u64::from(r.len))
        .chain(map.indirect.iter().copied());
    for b in blocks {
        src.read_exact_at(b * bs, buf)
            .map_err(|e| Error::io("cannot read", src.path(), e))?;
        out.file()
            .write_all_at(buf, root_offset + b * bs)
            .map_err(|e| output::write_error(out.file(), "cannot write", e))?;
    }
    Ok(())
}

fn note_limited(findings: &blockcheck::Findings, report: &mut Report, progress: &mut dyn Progress) {
    if let Some(why) = &findings.limited {
        progress.note(why);
        report.warnings.push(why.clone());
    }
}

/// Clean findings pass (a limited check noted); any other is refused.
pub(super) fn refuse_unclean(
    (path, findings): (std::path::PathBuf, blockcheck::Findings),
    report: &mut Report,
    progress: &mut dyn Progress,
) -> Result<()> {
    note_limited(&findings, report, progress);
    if findings.is_clean() {
        return Ok(());
    }
    Err(blockcheck::CheckError::Inconsistent {
        path,
        findings: Box::new(findings),
    }
    .into())
}

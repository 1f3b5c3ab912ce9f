//! The two pipes between the caller and the helper: the request (one JSON
//! document, caller → helper) and reports (JSON lines, helper processes →
//! caller). Each report is one `write(2)` shorter than PIPE_BUF, so lines
//! written by different sandbox processes never interleave.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};

use serde::{Deserialize, Serialize};

use crate::error::Stage;
use crate::spec::{Network, StepSpec};

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Check that namespaces, id maps and mounts work, then exit.
    Probe,
    /// Enter the step's namespaces with its id maps, then wait for its
    /// `Run`, whose spec must have this network and these ids. Sent as soon
    /// as the helper starts, so the kernel's namespace work overlaps the
    /// caller's preparation of the step.
    Enter { network: Network, uid: u32, gid: u32 },
    /// Run a step; `resolv_conf` is the host's, read by the caller, used only with host network.
    /// With `terminal`, the helper's stdio descriptors that are terminals are the step's own
    /// pseudo-terminal (see `terminal`), which the command makes its controlling terminal.
    Run {
        spec: Box<StepSpec>,
        resolv_conf: Option<String>,
        terminal: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// Set-up broke before the command ran.
    SetupFailed {
        stage: Stage,
        message: String,
        errno: Option<i32>,
    },
    /// The command ended and every other process of the step was killed.
    Finished { status: i32, peak_rss_kib: Option<u64> },
    /// Answer to `Request::Probe`.
    ProbeOk,
}

/// Longest report line; longer messages are cut so the write stays atomic.
const MAX_LINE: usize = 3800;

/// Sends one report; errors are ignored because the caller may be gone, and
/// there is nobody else to tell.
pub(crate) fn send(fd: BorrowedFd<'_>, report: &Report) {
    let mut line = serde_json::to_string(report).unwrap_or_default();
    if line.len() > MAX_LINE {
        if let Report::SetupFailed { stage, message, errno } = report {
            let mut cut = MAX_LINE / 2;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let short = Report::SetupFailed {
                stage: *stage,
                message: format!("{}…", &message[..cut]),
                errno: *errno,
            };
            line = serde_json::to_string(&short).unwrap_or_default();
        }
    }
    line.push('\n');
    // SAFETY: plain write(2) of an initialised buffer to a descriptor we borrow.
    unsafe {
        libc::write(fd.as_raw_fd(), line.as_ptr().cast(), line.len());
    }
}

/// Reads every report line until EOF.
pub(crate) fn read_reports(mut r: impl Read) -> io::Result<Vec<Report>> {
    let mut text = Vec::new();
    r.read_to_end(&mut text)?;
    Ok(parse_reports(&text))
}

/// The reports in the lines read; a line that is not one is skipped.
pub(crate) fn parse_reports(text: &[u8]) -> Vec<Report> {
    text.split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reports_round_trip_as_lines_and_long_messages_are_cut_below_pipe_buf() {
        let (r, w) = nix::unistd::pipe().unwrap();
        send(
            w.as_fd(),
            &Report::Finished {
                status: 3,
                peak_rss_kib: Some(10),
            },
        );
        let long = "x".repeat(10_000);
        send(
            w.as_fd(),
            &Report::SetupFailed {
                stage: Stage::Rootfs,
                message: long,
                errno: Some(1),
            },
        );
        drop(w);
        let got = read_reports(std::fs::File::from(r)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Report::Finished {
                status: 3,
                peak_rss_kib: Some(10)
            }
        );
        match &got[1] {
            Report::SetupFailed {
                stage: Stage::Rootfs,
                message,
                errno: Some(1),
            } => {
                assert!(message.len() < libc::PIPE_BUF, "{}", message.len())
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

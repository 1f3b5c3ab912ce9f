//! The last steps before the command: fd hygiene, PATH lookup in the step's
//! own environment (never the helper's), and execve with exactly that
//! environment.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error("chdir to the working directory `{}`: {source}", .cwd.display())]
    Cwd { cwd: PathBuf, source: io::Error },
    #[error("mark inherited descriptors close-on-exec: {0}")]
    Fds(io::Error),
    #[error("make the step's pseudo-terminal its controlling terminal: {0}")]
    ControllingTerminal(io::Error),
    #[error("command `{command}` not found in the step's PATH `{path}`; hint: PATH comes only from the step's env, add the toolchain's bin directory to it or give an absolute path")]
    NotFound { command: String, path: String },
    #[error("execve `{}`: {source}", .program.display())]
    Execve { program: PathBuf, source: nix::Error },
}

pub(crate) fn chdir(cwd: &Path) -> Result<(), ExecError> {
    std::env::set_current_dir(cwd).map_err(|source| ExecError::Cwd {
        cwd: cwd.to_path_buf(),
        source,
    })
}

/// Every descriptor but stdin/stdout/stderr closes at execve, so no pipe or
/// directory of the helper's reaches the step (an open host directory would
/// be a way out of the new root).
pub(crate) fn close_extra_fds_on_exec() -> Result<(), ExecError> {
    // SAFETY: close_range(2) with integer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(ExecError::Fds)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; a stale one just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Makes the first of stdin, stdout and stderr that is a terminal the
/// controlling terminal of the step's new session, so job control, Ctrl-C
/// and /dev/tty work. That terminal is the step's own pseudo-terminal:
/// the caller never passes its own (see `terminal`).
pub(crate) fn take_controlling_terminal() -> Result<(), ExecError> {
    // SAFETY: isatty(3) on a descriptor number.
    let Some(fd) = (0..3).find(|fd| unsafe { libc::isatty(*fd) } == 1) else {
        return Ok(());
    };
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it from another session).
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } != 0 {
        return Err(ExecError::ControllingTerminal(io::Error::last_os_error()));
    }
    Ok(())
}

/// Resolves `argv[0]` like execvp would, but with the step's PATH.
pub(crate) fn resolve(command: &str, env: &[(String, String)]) -> Result<PathBuf, ExecError> {
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| ExecError::NotFound {
            command: command.to_string(),
            path: path.to_string(),
        })
}

fn cstring(bytes: &[u8]) -> CString {
    // The spec was validated to hold no NUL bytes.
    CString::new(bytes).unwrap_or_default()
}

pub(crate) fn execve(program: &Path, argv: &[String], env: &[(String, String)]) -> ExecError {
    // The caller's umask is host state: every step starts from the same one.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let prog = cstring(program.as_os_str().as_bytes());
    let args: Vec<CString> = argv.iter().map(|a| cstring(a.as_bytes())).collect();
    let vars: Vec<CString> = env
        .iter()
        .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
        .collect();
    match nix::unistd::execve(&prog, &args, &vars) {
        Err(source) => ExecError::Execve {
            program: program.to_path_buf(),
            source,
        },
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_only_the_given_path_and_reports_it_when_missing() {
        let env = vec![("PATH".to_string(), "/nonexistent:/usr/bin".to_string())];
        assert_eq!(resolve("env", &env).unwrap(), Path::new("/usr/bin/env"));
        assert_eq!(resolve("/x/y", &env).unwrap(), Path::new("/x/y"));
        let e = resolve("env", &[("PATH".into(), "/nonexistent".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`env`") && e.contains("/nonexistent") && e.contains("hint:"),
            "{e}"
        );
        assert!(
            resolve("env", &[]).is_err(),
            "no PATH must not fall back to the helper's PATH"
        );
    }
}

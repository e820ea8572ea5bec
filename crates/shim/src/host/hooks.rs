//! Running a container's runtime-namespace OCI hooks (`wasmcell_oci::hooks`) as runc runs them:
//! in the runtime's namespaces (the shim's), one after the other in the spec's order, each with
//! the container's state as JSON on its stdin, its `args` as argv and its `env` (the shim's own
//! when the hook gives none), killed past its `timeout`. A hook that fails fails its stage with
//! its exit status and what it wrote, in runc's words.
//!
//! The daemon's children are reaped by its reaper thread (`super::process`), so a hook's exit
//! is learned from a subscription taken before it is spawned ([`UnderReaper`]); the unit tests,
//! which have no reaper, wait for the pid themselves.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wasmcell_oci::hooks::Hook;

/// The most of a hook's stdout or stderr kept for the error.
const OUTPUT_KEPT: u64 = 64 << 10;

/// How a hook's process is started and how its end is learned.
pub trait Children {
    /// Spawns `cmd`; the child, and how to wait for its exit status.
    fn spawn(&self, cmd: &mut Command) -> Result<(Child, Box<dyn ExitOf>), String>;
}

/// Waiting for one child's exit.
pub trait ExitOf {
    /// The exit status of `pid` (`128 + signal` when killed), waiting at most `timeout`;
    /// `None` when it is still running.
    fn wait(&mut self, pid: i32, timeout: Duration) -> Option<i32>;
}

/// The daemon's children: spawned under an exit subscription of its reaper.
pub struct UnderReaper;

impl Children for UnderReaper {
    fn spawn(&self, cmd: &mut Command) -> Result<(Child, Box<dyn ExitOf>), String> {
        let (child, watch) = super::process::spawn_watched(cmd).map_err(|e| e.to_string())?;
        Ok((child, Box::new(watch)))
    }
}

impl ExitOf for super::process::ExitWatch {
    fn wait(&mut self, pid: i32, timeout: Duration) -> Option<i32> {
        super::process::ExitWatch::wait(self, pid, timeout)
    }
}

/// The container's state, as the runtime spec's `state` gives it to a hook.
pub struct State<'a> {
    /// The container's id.
    pub id: &'a str,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: &'a str,
    /// The container's process as the host sees it (none once it is stopped).
    pub pid: Option<u32>,
    /// The bundle directory.
    pub bundle: &'a Path,
    /// The spec's annotations.
    pub annotations: &'a HashMap<String, String>,
}

impl State<'_> {
    fn json(&self) -> Vec<u8> {
        let mut state = serde_json::json!({
            "ociVersion": "1.2.0",
            "id": self.id,
            "status": self.status,
            "bundle": self.bundle,
        });
        if let Some(pid) = self.pid {
            state["pid"] = pid.into();
        }
        if !self.annotations.is_empty() {
            state["annotations"] = serde_json::json!(self.annotations);
        }
        serde_json::to_vec(&state).unwrap_or_default()
    }
}

/// How long a hook without a timeout is waited for: runc waits for ever; a day stands for it.
const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Runs `hooks` of stage `stage` in order, started by `children`; the first failure ends the
/// stage with its message.
pub fn run(
    children: &dyn Children,
    stage: &str,
    hooks: &[Hook],
    state: &State<'_>,
) -> Result<(), String> {
    let json = state.json();
    for (i, hook) in hooks.iter().enumerate() {
        run_one(children, hook, &json)
            .map_err(|e| format!("error running {stage} hook #{i}: {e}"))?;
    }
    Ok(())
}

fn run_one(children: &dyn Children, hook: &Hook, state: &[u8]) -> Result<(), String> {
    let mut cmd = Command::new(&hook.path);
    if let Some((arg0, rest)) = hook.args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    if let Some(env) = &hook.env {
        cmd.env_clear();
        for kv in env {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, mut exit) = children
        .spawn(&mut cmd)
        .map_err(|e| format!("{}: {e}", hook.path.display()))?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    // The state is small; a hook that never reads its stdin must not hold the stage up.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state);
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(r) = r {
                let mut r = r.take(OUTPUT_KEPT);
                let _ = r.read_to_end(&mut kept);
            }
            String::from_utf8_lossy(&kept).trim_end().to_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let timeout = hook.timeout.unwrap_or(NO_TIMEOUT);
    let Some(status) = exit.wait(pid, timeout) else {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = exit.wait(pid, Duration::from_secs(5));
        return Err(format!(
            "hook ran past specified timeout of {:.1}s",
            timeout.as_secs_f64()
        ));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    drop(child);
    if status == 0 {
        Ok(())
    } else {
        Err(format!(
            "exit status {status}, stdout: {stdout}, stderr: {stderr}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The tests have no reaper: a child is waited for by its pid.
    struct Waitpid;

    impl Children for Waitpid {
        fn spawn(&self, cmd: &mut Command) -> Result<(Child, Box<dyn ExitOf>), String> {
            Ok((cmd.spawn().map_err(|e| e.to_string())?, Box::new(Waitpid)))
        }
    }

    impl ExitOf for Waitpid {
        fn wait(&mut self, pid: i32, timeout: Duration) -> Option<i32> {
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            let until = Instant::now() + timeout;
            loop {
                match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => return Some(code),
                    Ok(WaitStatus::Signaled(_, sig, _)) => return Some(128 + sig as i32),
                    _ if Instant::now() >= until => return None,
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    }

    fn sh(script: &str, timeout: Option<Duration>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: Some(vec!["GREETING=hi".into()]),
            timeout,
        }
    }

    fn state() -> (HashMap<String, String>, std::path::PathBuf) {
        let mut annotations = HashMap::new();
        annotations.insert("nerdctl/name".to_owned(), "web".to_owned());
        (annotations, "/run/bundle".into())
    }

    #[test]
    fn a_hook_gets_the_state_on_stdin_its_env_and_args() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (annotations, bundle) = state();
        let st = State {
            id: "c1",
            status: "creating",
            pid: Some(42),
            bundle: &bundle,
            annotations: &annotations,
        };
        let script = format!(
            "cat > {0}/state; echo \"$GREETING $0\" > {0}/env",
            dir.path().display()
        );
        run(&Waitpid, "createRuntime", &[sh(&script, None)], &st).expect("the hook runs");
        let state = std::fs::read_to_string(dir.path().join("state")).expect("the state");
        let v: serde_json::Value = serde_json::from_str(&state).expect("JSON");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["status"], "creating");
        assert_eq!(v["pid"], 42);
        assert_eq!(v["bundle"], "/run/bundle");
        assert_eq!(v["annotations"]["nerdctl/name"], "web");
        let env = std::fs::read_to_string(dir.path().join("env")).expect("env and argv");
        assert_eq!(env, "hi sh\n");
    }

    #[test]
    fn a_failure_and_a_timeout_name_the_stage_the_hook_and_its_output() {
        let (annotations, bundle) = state();
        let st = State {
            id: "c1",
            status: "stopped",
            pid: None,
            bundle: &bundle,
            annotations: &annotations,
        };
        let ok = sh("exit 0", None);
        let err = run(
            &Waitpid,
            "poststop",
            &[ok, sh("echo out; echo no >&2; exit 3", None)],
            &st,
        )
        .expect_err("the second fails");
        assert_eq!(
            err,
            "error running poststop hook #1: exit status 3, stdout: out, stderr: no"
        );
        let started = Instant::now();
        let err = run(
            &Waitpid,
            "poststart",
            &[sh("sleep 30", Some(Duration::from_millis(300)))],
            &st,
        )
        .expect_err("past its timeout");
        assert!(
            err.ends_with("hook ran past specified timeout of 0.3s"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

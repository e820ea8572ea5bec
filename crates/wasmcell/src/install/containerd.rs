//! The node's containerd, as `install` needs it: its binary (which version it is, whether it
//! loads a configuration) and its daemon (restarting it and waiting until it answers).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use toml_edit::{DocumentMut, Item, TableLike};

use super::config::RUNTIME_TYPE;

/// How long `containerd --version` or `config dump` may take.
const BINARY_DEADLINE: Duration = Duration::from_secs(30);

/// The containerd binary of the node.
#[derive(Debug, Clone)]
pub struct Binary {
    path: PathBuf,
}

impl Binary {
    /// `explicit`, or `containerd` found on `PATH`.
    pub fn find(explicit: Option<&Path>) -> Result<Binary> {
        if let Some(path) = explicit {
            if !path.is_file() {
                bail!("no containerd binary at {}", path.display());
            }
            return Ok(Binary {
                path: path.to_owned(),
            });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("containerd"))
            .find(|p| p.is_file())
            .map(|path| Binary { path })
            .context(
                "containerd is not installed (no `containerd` on PATH): install it first, or \
                 name its binary with --containerd",
            )
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The version `containerd --version` prints (`v2.2.9`), and its major number.
    pub fn version(&self) -> Result<(String, u64)> {
        let out = run(Command::new(&self.path).arg("--version"), BINARY_DEADLINE)?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("{} --version failed: {}", self.path.display(), stderr(&out));
        }
        // "containerd github.com/containerd/containerd/v2 v2.2.9 <revision>"; distributions
        // may drop the `v` ("1.6.20~ds1").
        let version = text
            .split_whitespace()
            .nth(2)
            .filter(|w| {
                w.trim_start_matches('v')
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .with_context(|| format!("no version in `containerd --version`: {}", text.trim()))?;
        let major = version
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("cannot read containerd's version {version}"))?;
        Ok((version.to_owned(), major))
    }

    /// Loads `config` the way the daemon does (`containerd --config CONFIG config dump`): the
    /// whole configuration with its imports merged and every default filled in.
    pub fn dump(&self, config: &Path) -> Result<std::result::Result<DocumentMut, String>> {
        let out = run(
            Command::new(&self.path)
                .arg("--config")
                .arg(config)
                .args(["config", "dump"]),
            BINARY_DEADLINE,
        )?;
        if !out.status.success() {
            return Ok(Err(stderr(&out)));
        }
        let doc = String::from_utf8_lossy(&out.stdout)
            .parse()
            .context("`containerd config dump` printed something that is not TOML")?;
        Ok(Ok(doc))
    }

    /// The settings of containerd 1.x's built-in runtime `name` that differ from a runtime
    /// listed with its type alone (`sandbox_mode = "podsandbox"` on 1.7), read from the daemon's
    /// own defaults (`config dump` of `empty`, a config that holds only `version = 2`), so that
    /// writing the runtime out keeps it as it was.
    pub fn builtin_runtime_settings(
        &self,
        name: &str,
        empty: &Path,
    ) -> Result<Vec<(String, toml_edit::Value)>> {
        let doc = self
            .dump(empty)?
            .map_err(|e| anyhow::anyhow!("containerd cannot load an empty config: {e}"))?;
        let Some(runtime) = doc
            .get("plugins")
            .and_then(|p| p.get("io.containerd.grpc.v1.cri"))
            .and_then(|c| c.get("containerd"))
            .and_then(|c| c.get("runtimes"))
            .and_then(|r| r.get(name))
            .and_then(Item::as_table_like)
        else {
            return Ok(Vec::new());
        };
        let set = |v: &toml_edit::Value| match v {
            toml_edit::Value::String(s) => !s.value().is_empty(),
            toml_edit::Value::Boolean(b) => *b.value(),
            toml_edit::Value::Integer(i) => *i.value() != 0,
            _ => false,
        };
        Ok(runtime
            .iter()
            .filter(|(key, _)| *key != "runtime_type")
            .filter_map(|(key, item)| {
                let v = item.as_value()?;
                set(v).then(|| (key.to_owned(), v.clone()))
            })
            .collect())
    }

    /// Checks a change before it is made: containerd must load `new` (the root config as it
    /// will be); its CRI plugin must then have runtime handler `handler` running wasmcell
    /// (`present`) or not have it; and everything else containerd reads from it must be what
    /// it reads from `old` (the root config as it is; None when there is none). The last part
    /// catches what a text edit cannot see: containerd 1.x replaces a whole plugin section
    /// with an imported file's, and replaces its built-in runtimes once a config lists one.
    pub fn check(
        &self,
        old: Option<&Path>,
        new: &Path,
        handler: &str,
        present: bool,
    ) -> Result<()> {
        let mut new_dump = self
            .dump(new)?
            .map_err(|e| anyhow::anyhow!("containerd cannot load the new configuration: {e}"))?;
        let found = CRI_RUNTIME_PLUGINS.iter().any(|plugin| {
            runtimes(&new_dump, plugin)
                .and_then(|r| r.get(handler))
                .and_then(|h| h.get("runtime_type"))
                .and_then(Item::as_str)
                == Some(RUNTIME_TYPE)
        });
        match (found, present) {
            (false, true) => bail!(
                "containerd loads the new configuration but its CRI plugin would not have \
                 handler `{handler}` (check the file's `version` against containerd's)"
            ),
            (true, false) => bail!(
                "containerd would still have handler `{handler}` after the change (is it \
                 defined in another file too?)"
            ),
            _ => {}
        }
        let old_dump = match old {
            Some(path) => self.dump(path)?,
            None => {
                let empty = new.with_extension("wasmcell-empty");
                std::fs::write(&empty, "").with_context(|| format!("write {}", empty.display()))?;
                let dumped = self.dump(&empty);
                let _ = std::fs::remove_file(&empty);
                dumped?
            }
        };
        let Ok(mut old_dump) = old_dump else {
            // Today's config does not load: nothing to compare with.
            return Ok(());
        };
        for doc in [&mut old_dump, &mut new_dump] {
            doc.remove("imports");
            // The one CRI setting install adds beside the handler (containerd 2.3+).
            if let Some(images) = doc
                .get_mut("plugins")
                .and_then(|p| p.get_mut("io.containerd.cri.v1.images"))
                .and_then(Item::as_table_like_mut)
            {
                images.remove(super::config::LOCAL_PULL_KEY);
            }
            for plugin in CRI_RUNTIME_PLUGINS {
                if let Some(r) = runtimes_mut(doc, plugin) {
                    r.remove(handler);
                }
            }
        }
        let mut changed = Vec::new();
        differences(old_dump.as_table(), new_dump.as_table(), "", &mut changed);
        if !changed.is_empty() {
            changed.truncate(5);
            bail!(
                "the new configuration would change more than handler `{handler}` for \
                 containerd: {}",
                changed.join(", ")
            );
        }
        Ok(())
    }
}

/// The plugins that hold CRI runtime handlers: containerd 2.x's, then 1.x's.
pub const CRI_RUNTIME_PLUGINS: [&str; 2] =
    ["io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"];

pub fn runtimes<'a>(doc: &'a DocumentMut, plugin: &str) -> Option<&'a Item> {
    doc.get("plugins")?
        .get(plugin)?
        .get("containerd")?
        .get("runtimes")
}

fn runtimes_mut<'a>(doc: &'a mut DocumentMut, plugin: &str) -> Option<&'a mut dyn TableLike> {
    doc.get_mut("plugins")?
        .get_mut(plugin)?
        .get_mut("containerd")?
        .get_mut("runtimes")?
        .as_table_like_mut()
}

/// The dotted paths of the keys whose values differ between `a` and `b`.
fn differences(a: &dyn TableLike, b: &dyn TableLike, at: &str, out: &mut Vec<String>) {
    let mut keys: Vec<&str> = a.iter().map(|(k, _)| k).collect();
    for (k, _) in b.iter() {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for k in keys {
        let path = if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        };
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) => match (x.as_table_like(), y.as_table_like()) {
                (Some(x), Some(y)) => differences(x, y, &path, out),
                _ if value_text(x) == value_text(y) => {}
                _ => out.push(path),
            },
            // containerd decodes into Go structs: a key set to its zero value means what a
            // missing key means (1.x dumps its built-in runc options with every zero field).
            (Some(only), None) | (None, Some(only)) if is_zero(only) => {}
            _ => out.push(path),
        }
    }
}

/// Whether `item` is a Go zero value: "", 0, false, an empty array, or a table of such.
fn is_zero(item: &Item) -> bool {
    if let Some(t) = item.as_table_like() {
        return t.iter().all(|(_, v)| is_zero(v));
    }
    match item.as_value() {
        Some(toml_edit::Value::String(s)) => s.value().is_empty(),
        Some(toml_edit::Value::Integer(i)) => *i.value() == 0,
        Some(toml_edit::Value::Float(f)) => *f.value() == 0.0,
        Some(toml_edit::Value::Boolean(b)) => !*b.value(),
        Some(toml_edit::Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

/// A value as TOML text without its decoration (dumps differ in nothing else).
fn value_text(item: &Item) -> String {
    match item.as_value() {
        Some(v) => {
            let mut v = v.clone();
            v.decor_mut().clear();
            v.to_string()
        }
        None => item.to_string(),
    }
}

/// Restarts containerd with `command` (run by `sh -c`); `systemd` when the command needs
/// systemd running, which is checked first for a clear error.
pub fn restart(command: &str, systemd: bool) -> Result<()> {
    if systemd && !Path::new("/run/systemd/system").is_dir() {
        bail!(
            "cannot restart containerd ({command}): systemd is not running here; restart it \
             yourself or pass --restart-command"
        );
    }
    let mut cmd = Command::new("sh");
    cmd.args(["-c", command]);
    let out = run(&mut cmd, Duration::from_secs(120))?;
    if !out.status.success() {
        bail!("restarting containerd failed: {}", stderr(&out));
    }
    Ok(())
}

/// Waits for a restart that another program makes (k0s restarts containerd a few seconds after
/// its drop-in directory changes): until containerd stops answering at `address`, then until
/// it answers again, at most `timeout` each; returns the version it reports.
pub fn wait_for_restart(address: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let answers = || {
        wasmcell_image::containerd::Containerd::connect(&address.to_string_lossy(), "default")
            .and_then(|c| c.version())
            .is_ok()
    };
    while answers() {
        if Instant::now() >= deadline {
            bail!(
                "containerd at {} was not restarted within {} s",
                address.display(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until_answering(address, timeout)
}

/// Waits until containerd answers a Version call at `address`, at most `timeout`; returns the
/// version it reports.
pub fn wait_until_answering(address: &Path, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer =
            wasmcell_image::containerd::Containerd::connect(&address.to_string_lossy(), "default")
                .and_then(|c| c.version());
        match answer {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => bail!(
                "containerd did not answer at {} within {} s: {e}",
                address.display(),
                timeout.as_secs()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs `cmd` to its end, killing it at `deadline` (a hung command must not hang `install`).
pub fn run(cmd: &mut Command, deadline: Duration) -> Result<Output> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {name}"))?;
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let end = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not finish within {} s", deadline.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A command's stderr as one trimmed line for an error message.
fn stderr(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(a: &str, b: &str) -> Vec<String> {
        let a: DocumentMut = a.parse().unwrap();
        let b: DocumentMut = b.parse().unwrap();
        let mut out = Vec::new();
        differences(a.as_table(), b.as_table(), "", &mut out);
        out
    }

    #[test]
    fn differences_name_changed_keys_and_pass_over_zero_values() {
        assert!(diff("[a]\nx = 1\n", "[a]\nx = 1 # same\n").is_empty());
        assert_eq!(diff("[a]\nx = 1\n", "[a]\nx = 2\n"), ["a.x"]);
        assert_eq!(
            diff(
                "[p.cri]\nsandbox = \"mine\"\n",
                "[p.cri]\nsandbox = \"pause:3.6\"\n"
            ),
            ["p.cri.sandbox"]
        );
        // A zero value and a missing key mean the same to containerd's Go structs.
        assert!(diff("[r.options]\nRoot = \"\"\nIoUid = 0\nNo = false\n", "[r]\n").is_empty());
        assert_eq!(diff("[r]\nruntime = \"x\"\n", "[r]\n"), ["r.runtime"]);
    }
}

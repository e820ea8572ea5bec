//! containerd's configuration as TOML text: which config version a file is, where its CRI
//! plugin keeps runtime handlers, and the edit that adds or removes wasmcell's handler.
//!
//! Edits go through `toml_edit`, which keeps everything it does not touch byte for byte: the
//! user's comments, blank lines, key order and quoting. A handler table that `install` adds is
//! appended at the end of the file, and the tables above it that did not exist (`plugins`, the
//! CRI plugin's, `containerd`, `runtimes`) are added as implicit tables, which print nothing;
//! so removing the handler again gives back the file as it was.

use std::path::Path;

use anyhow::{bail, Context, Result};
use toml_edit::{value, DocumentMut, Item, Table, TableLike};

/// The runtime type containerd resolves to `containerd-shim-wasmcell-v1`.
pub const RUNTIME_TYPE: &str = "io.containerd.wasmcell.v1";

/// The comment put above a handler table that `install` adds.
const ADDED_BY: &str = "# The wasmcell runtime handler (added by `wasmcell install`; `wasmcell install --uninstall` removes it).";

/// The comment put above the default runtime that `install` writes out for containerd 1.x.
const KEPT_DEFAULT: &str = "# containerd 1.x's built-in default runtime, written out because a config that lists a runtime loses the built-in ones (added by `wasmcell install`).";

/// The comment put above the CRI image setting `install` adds for containerd 2.3 and later.
const LOCAL_PULL_ADDED: &str = "# containerd 2.3+ unpacks pulled images of the host's OS only unless the CRI plugin pulls through the client, which unpacks wasm images too (added by `wasmcell install`; `--uninstall` removes it).";

/// The comment on the CRI image plugin's header when install had to write one (the file had only
/// its sub-tables).
const IMPLICIT_MADE_EXPLICIT: &str = "# containerd 2.3+ unpacks pulled images of the host's OS only unless the CRI plugin pulls through the client, which unpacks wasm images too (this header and its setting added by `wasmcell install`; `--uninstall` removes them).";

/// containerd 2.x's CRI image plugin and the setting that makes its pulls unpack wasm images.
const IMAGES_PLUGIN: &str = "io.containerd.cri.v1.images";
pub const LOCAL_PULL_KEY: &str = "use_local_image_pull";

/// What [`ConfigFile::pull_through_client`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalPull {
    /// The setting was added.
    Added,
    /// The file already pulls through the client.
    Already,
    /// The file turns it off; it is left as the user wrote it.
    TurnedOff,
}

/// What a file says of the CRI image plugin's `use_local_image_pull`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagesSetting {
    /// The file has no table for the image plugin.
    NoTable,
    /// It has the table, without the setting.
    TableWithout,
    /// It sets it true.
    On,
    /// It sets it false.
    Off,
}

/// The first line of a configuration file `install` wrote because none existed.
pub const WRITTEN_BY: &str =
    "# containerd configuration written by `wasmcell install` (none existed).";

/// The config versions this tool knows, and where each keeps the CRI plugin's runtimes.
///
/// Version 2 is containerd 1.x's layout (containerd 2.x still reads it and migrates it on
/// load); version 3 is containerd 2.x's, where the CRI runtime settings moved to a plugin of
/// their own.
pub fn cri_runtime_plugin(version: i64) -> Result<&'static str> {
    match version {
        2 => Ok("io.containerd.grpc.v1.cri"),
        3 => Ok("io.containerd.cri.v1.runtime"),
        1 => bail!(
            "config version 1 (a file without `version`) is not supported: migrate it first \
             with `containerd config migrate` (containerd 2.x) or add `version = 2` \
             (containerd 1.x)"
        ),
        other => bail!("unknown config version {other} (known: 2 for containerd 1.x, 3 for 2.x)"),
    }
}

/// The config version a containerd of `major` version writes: 2 for 1.x, 3 for 2.x.
pub fn version_for_containerd(major: u64) -> i64 {
    if major >= 2 {
        3
    } else {
        2
    }
}

/// What wasmcell's handler table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handler {
    /// The handler's name: a RuntimeClass's `handler`, CRI's `runtime_handler`.
    pub name: String,
    /// The shim's absolute path, set as `runtime_path` so containerd needs no `PATH` for it.
    pub shim_path: Option<String>,
}

/// One parsed configuration file.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    doc: DocumentMut,
}

/// What an edit did to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// The file already said this; nothing changed.
    Unchanged,
    /// The handler was added.
    Added,
    /// The handler was there with other values; they were set.
    Updated,
    /// The handler was removed.
    Removed,
}

impl ConfigFile {
    /// Parses `text`; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile> {
        let doc = text
            .parse::<DocumentMut>()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        Ok(ConfigFile { doc })
    }

    /// A new file for config `version` that holds only the version (and says who wrote it).
    pub fn minimal(version: i64) -> ConfigFile {
        let text = format!("{WRITTEN_BY}\nversion = {version}\n");
        ConfigFile {
            doc: text.parse().unwrap_or_default(),
        }
    }

    /// The file's `version` (1 when it has none, as containerd reads it).
    pub fn version(&self) -> Result<i64> {
        match self.doc.get("version") {
            None => Ok(1),
            Some(item) => item
                .as_integer()
                .context("`version` is not an integer (containerd needs 2 or 3)"),
        }
    }

    /// The `imports` the file lists (paths or glob patterns, relative to the file's directory).
    pub fn imports(&self) -> Result<Vec<String>> {
        let Some(item) = self.doc.get("imports") else {
            return Ok(Vec::new());
        };
        let array = item
            .as_array()
            .context("`imports` is not an array of paths")?;
        array
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .context("`imports` holds something that is not a path")
            })
            .collect()
    }

    /// Sets `imports` to `paths` (to check a change of an imported file before it is made).
    pub fn set_imports(&mut self, paths: Vec<String>) {
        let array: toml_edit::Array = paths.into_iter().collect();
        self.doc.insert("imports", value(array));
    }

    /// The handler table `name` under the CRI plugin of config `version`, if the file has it.
    fn handler(&self, version: i64, name: &str) -> Result<Option<&dyn TableLike>> {
        match self.handler_item(version, name)? {
            None => Ok(None),
            Some(item) => item
                .as_table_like()
                .map(Some)
                .with_context(|| format!("runtime handler `{name}` is not a table")),
        }
    }

    /// The item of handler `name` under the CRI plugin of config `version`, if any.
    fn handler_item(&self, version: i64, name: &str) -> Result<Option<&Item>> {
        let mut table: &dyn TableLike = self.doc.as_table();
        let path = [
            "plugins",
            cri_runtime_plugin(version)?,
            "containerd",
            "runtimes",
        ];
        for key in path {
            match table.get(key) {
                None => return Ok(None),
                Some(item) => {
                    table = item
                        .as_table_like()
                        .with_context(|| format!("`{key}` is not a table"))?
                }
            }
        }
        Ok(table.get(name))
    }

    /// The CRI plugin's runtimes table; the tables on the way that do not exist are added as
    /// implicit tables (they print nothing of their own).
    fn runtimes_mut(&mut self, plugin: &str) -> Result<&mut dyn TableLike> {
        let mut table: &mut dyn TableLike = self.doc.as_table_mut();
        for key in ["plugins", plugin, "containerd", "runtimes"] {
            let item = table.entry(key).or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            });
            table = item
                .as_table_like_mut()
                .with_context(|| format!("`{key}` in the CRI plugin's settings is not a table"))?;
        }
        Ok(table)
    }

    /// The `runtime_type` of handler `name`, if the file has that handler.
    pub fn handler_runtime_type(&self, version: i64, name: &str) -> Result<Option<String>> {
        Ok(self.handler(version, name)?.map(|t| {
            t.get("runtime_type")
                .and_then(Item::as_str)
                .unwrap_or_default()
                .to_owned()
        }))
    }

    /// Makes handler `h` run wasmcell under config `version`, keeping any other keys the
    /// handler table has.
    pub fn set_handler(&mut self, version: i64, h: &Handler) -> Result<Edit> {
        let plugin = cri_runtime_plugin(version)?;
        let end = last_table_position(self.doc.as_table()) + 1;
        let trailing = self.doc.trailing().as_str().unwrap_or_default().to_owned();
        let adds = self.handler(version, &h.name)?.is_none();
        if adds {
            self.doc.set_trailing("");
        }
        let table = self.runtimes_mut(plugin)?;
        let edit = if table.contains_key(&h.name) {
            Edit::Updated
        } else {
            let mut t = Table::new();
            t.set_position(Some(end));
            // What ended the file (comments, blank lines) stays above the new table, so the
            // user's text is kept whole as the start of the new file.
            t.decor_mut()
                .set_prefix(format!("{trailing}\n{ADDED_BY}\n"));
            table.insert(&h.name, Item::Table(t));
            Edit::Added
        };
        let handler = table
            .get_mut(&h.name)
            .and_then(Item::as_table_like_mut)
            .with_context(|| format!("runtime handler `{}` is not a table", h.name))?;
        let mut changed = set_str(handler, "runtime_type", RUNTIME_TYPE);
        if let Some(path) = &h.shim_path {
            changed |= set_str(handler, "runtime_path", path);
        }
        changed |= add_patterns(handler, "pod_annotations", POD_ANNOTATIONS)
            .with_context(|| format!("runtime handler `{}`", h.name))?;
        changed |= add_patterns(handler, "container_annotations", CONTAINER_ANNOTATIONS)
            .with_context(|| format!("runtime handler `{}`", h.name))?;
        Ok(match (edit, changed) {
            (Edit::Updated, false) => Edit::Unchanged,
            (edit, _) => edit,
        })
    }

    /// Writes out the CRI plugin's default runtime (`default_runtime_name`, runc unless the
    /// file says otherwise) as containerd 1.x has it built in, if the file does not list it.
    /// containerd 1.x drops its built-in runtimes once a config lists any runtime, and its
    /// CRI plugin then refuses to load ("no corresponding runtime configured ... for
    /// default_runtime_name"); adding a handler to a file that lists none would do that.
    /// Returns true when it added the runtime.
    /// `builtin` are the built-in runtime's other settings, written out with it; `placeholders`
    /// are values a distribution substitutes into the file before containerd reads it
    /// (MicroK8s's `${RUNTIME}`).
    pub fn keep_default_runtime(
        &mut self,
        version: i64,
        builtin: &[(String, toml_edit::Value)],
        placeholders: &[(&str, &str)],
    ) -> Result<bool> {
        let plugin = cri_runtime_plugin(version)?;
        let default = self
            .doc
            .get("plugins")
            .and_then(|p| p.get(plugin))
            .and_then(|p| p.get("containerd"))
            .and_then(|c| c.get("default_runtime_name"))
            .and_then(Item::as_str)
            .unwrap_or("runc");
        let default = placeholders
            .iter()
            .find(|(p, _)| *p == default)
            .map_or(default, |(_, v)| v)
            .to_owned();
        if self.handler_item(version, &default)?.is_some() {
            return Ok(false);
        }
        if default != "runc" {
            bail!(
                "the CRI plugin's default runtime `{default}` is not listed in the file; \
                 containerd 1.x would lose it once a runtime is added: list it first"
            );
        }
        let end = last_table_position(self.doc.as_table()) + 1;
        let table = self.runtimes_mut(plugin)?;
        let mut t = Table::new();
        t.set_position(Some(end));
        t.decor_mut().set_prefix(format!("\n{KEPT_DEFAULT}\n"));
        t.insert("runtime_type", value("io.containerd.runc.v2"));
        for (key, v) in builtin {
            let mut v = v.clone();
            v.decor_mut().clear();
            t.insert(key, Item::Value(v));
        }
        table.insert(&default, Item::Table(t));
        Ok(true)
    }

    /// Removes handler `name` if it runs wasmcell; a handler of that name that runs something
    /// else is refused. Tables left empty that print nothing are removed with it.
    pub fn remove_handler(&mut self, version: i64, name: &str) -> Result<Edit> {
        match self.handler_runtime_type(version, name)? {
            None => return Ok(Edit::Unchanged),
            Some(t) if t != RUNTIME_TYPE => {
                bail!("runtime handler `{name}` runs `{t}`, not wasmcell; not removing it")
            }
            Some(_) => {}
        }
        // The text install moved above the table goes back to the end of the file.
        let prefix = self
            .handler_item(version, name)?
            .and_then(Item::as_table)
            .and_then(|t| t.decor().prefix())
            .and_then(|p| p.as_str())
            .unwrap_or_default()
            .to_owned();
        let path = [
            "plugins",
            cri_runtime_plugin(version)?,
            "containerd",
            "runtimes",
        ];
        // The default runtime install wrote out goes with the handler.
        let kept = self
            .handler_item(version, "runc")?
            .and_then(Item::as_table)
            .and_then(|t| t.decor().prefix())
            .and_then(|p| p.as_str())
            == Some(&format!("\n{KEPT_DEFAULT}\n"));
        if kept {
            remove_path(self.doc.as_table_mut(), &path, "runc");
        }
        remove_path(self.doc.as_table_mut(), &path, name);
        if let Some(moved) = prefix.strip_suffix(&format!("\n{ADDED_BY}\n")) {
            let trailing = self.doc.trailing().as_str().unwrap_or_default().to_owned();
            self.doc.set_trailing(format!("{moved}{trailing}"));
        }
        Ok(Edit::Removed)
    }

    /// Makes the CRI plugin pull through containerd's client (in a file of either version:
    /// containerd 2.x reads the image plugin's table from a version 2 file too), whose
    /// unpacker unpacks every platform: from containerd 2.3 the transfer service that pulls by
    /// default unpacks only images of the host's OS, and a pod of a wasi/wasm image then fails
    /// ("parent snapshot ... does not exist"). A value the file already has is kept.
    pub fn pull_through_client(&mut self) -> Result<LocalPull> {
        let end = last_table_position(self.doc.as_table()) + 1;
        let plugins = self
            .doc
            .as_table_mut()
            .entry("plugins")
            .or_insert_with(|| {
                let mut t = Table::new();
                t.set_implicit(true);
                Item::Table(t)
            })
            .as_table_like_mut()
            .context("`plugins` is not a table")?;
        let Some(images) = plugins.get_mut(IMAGES_PLUGIN) else {
            let mut t = Table::new();
            t.set_position(Some(end));
            t.decor_mut().set_prefix(format!("\n{LOCAL_PULL_ADDED}\n"));
            t.insert(LOCAL_PULL_KEY, value(true));
            plugins.insert(IMAGES_PLUGIN, Item::Table(t));
            return Ok(LocalPull::Added);
        };
        let Some(images) = images.as_table_mut() else {
            // An inline table has no room for the comment that marks what install added.
            bail!(
                "`plugins.\"{IMAGES_PLUGIN}\"` is not a table of its own (an inline table?): \
                 add `{LOCAL_PULL_KEY} = true` to it by hand, or write it as a table"
            );
        };
        match images.get(LOCAL_PULL_KEY).map(|v| v.as_bool()) {
            Some(Some(true)) => Ok(LocalPull::Already),
            Some(Some(false)) => Ok(LocalPull::TurnedOff),
            Some(None) => bail!("`{LOCAL_PULL_KEY}` of the CRI image plugin is not a boolean"),
            None if images.is_implicit() => {
                // Only its sub-tables were written (`.registry`, `.pinned_images`): the table
                // now prints a header of its own, marked so that uninstall makes it implicit
                // again.
                images.set_implicit(false);
                images
                    .decor_mut()
                    .set_prefix(format!("\n{IMPLICIT_MADE_EXPLICIT}\n"));
                images.insert(LOCAL_PULL_KEY, value(true));
                Ok(LocalPull::Added)
            }
            None => {
                images.insert(LOCAL_PULL_KEY, value(true));
                if let Some(mut key) = images.key_mut(LOCAL_PULL_KEY) {
                    key.leaf_decor_mut()
                        .set_prefix(format!("{LOCAL_PULL_ADDED}\n"));
                }
                Ok(LocalPull::Added)
            }
        }
    }

    /// What the file says of pulling through the client ([`ConfigFile::pull_through_client`]).
    pub fn images_setting(&self) -> ImagesSetting {
        let Some(item) = self.doc.get("plugins").and_then(|p| p.get(IMAGES_PLUGIN)) else {
            return ImagesSetting::NoTable;
        };
        let implicit = item.as_table().is_some_and(Table::is_implicit);
        match item.get(LOCAL_PULL_KEY).and_then(Item::as_bool) {
            Some(true) => ImagesSetting::On,
            Some(false) => ImagesSetting::Off,
            None if implicit => ImagesSetting::NoTable,
            None => ImagesSetting::TableWithout,
        }
    }

    /// Removes what [`ConfigFile::pull_through_client`] added; a setting the user wrote stays.
    /// True when it removed something.
    pub fn remove_pull_through_client(&mut self) -> bool {
        let marked = |prefix: Option<&str>| prefix.is_some_and(|p| p.contains(LOCAL_PULL_ADDED));
        let Some(plugins) = self
            .doc
            .get_mut("plugins")
            .and_then(Item::as_table_like_mut)
        else {
            return false;
        };
        let Some(images) = plugins.get_mut(IMAGES_PLUGIN).and_then(Item::as_table_mut) else {
            return false;
        };
        let header = images.decor().prefix().and_then(|p| p.as_str());
        let whole_table = marked(header);
        let made_explicit = header.is_some_and(|p| p.contains(IMPLICIT_MADE_EXPLICIT));
        let key_marked = images
            .key(LOCAL_PULL_KEY)
            .is_some_and(|k| marked(k.leaf_decor().prefix().and_then(|p| p.as_str())));
        if !whole_table && !key_marked && !made_explicit {
            return false;
        }
        images.remove(LOCAL_PULL_KEY);
        if made_explicit {
            images.decor_mut().clear();
            images.set_implicit(true);
            return true;
        }
        if whole_table && images.is_empty() {
            plugins.remove(IMAGES_PLUGIN);
            let prints_nothing = self
                .doc
                .get("plugins")
                .and_then(Item::as_table)
                .is_some_and(|t| t.is_implicit() && t.is_empty());
            if prints_nothing {
                self.doc.remove("plugins");
            }
        }
        true
    }

    /// True when the file holds nothing but `version` (and comments): what [`ConfigFile::minimal`]
    /// wrote, once the handler is gone.
    pub fn is_minimal(&self) -> bool {
        self.doc.to_string().starts_with(WRITTEN_BY)
            && self
                .doc
                .as_table()
                .iter()
                .all(|(k, item)| k == "version" || item.as_table_like().is_some_and(is_empty_deep))
    }

    /// The text of the file.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }
}

/// The pod annotations the CRI plugin passes to wasmcell (patterns of Go's `path.Match`): the
/// workload settings of the pod (`wasmcell.dev/<setting>`) and of one of its containers
/// (`<container>.wasmcell.dev/<setting>`).
pub const POD_ANNOTATIONS: &[&str] = &["wasmcell.dev/*", "*.wasmcell.dev/*"];
/// The container annotations the CRI plugin passes to wasmcell: where the kubelet mounted the
/// termination message, which wasmcell writes a trap's reason into.
pub const CONTAINER_ANNOTATIONS: &[&str] = &["io.kubernetes.container.terminationMessagePath"];

/// Adds each of `patterns` missing from the list `key` (made if absent), keeping the user's
/// entries; whether it added any.
fn add_patterns(table: &mut dyn TableLike, key: &str, patterns: &[&str]) -> Result<bool> {
    if table.get(key).is_none() {
        table.insert(key, value(toml_edit::Array::new()));
    }
    let list = table
        .get_mut(key)
        .and_then(Item::as_array_mut)
        .with_context(|| format!("`{key}` is not a list"))?;
    let mut added = false;
    for pattern in patterns {
        if !list.iter().any(|v| v.as_str() == Some(pattern)) {
            list.push(*pattern);
            added = true;
        }
    }
    Ok(added)
}

/// Sets `key` to the string `v`; true when that changed the table.
fn set_str(table: &mut dyn TableLike, key: &str, v: &str) -> bool {
    if table.get(key).and_then(Item::as_str) == Some(v) {
        return false;
    }
    match table.get_mut(key) {
        // Keep the key's decoration (its comment, its alignment), change only the value.
        Some(item) if item.is_value() => {
            let decor = item.as_value().map(|old| old.decor().clone());
            *item = value(v);
            if let (Some(decor), Some(new)) = (decor, item.as_value_mut()) {
                *new.decor_mut() = decor;
            }
        }
        _ => {
            table.insert(key, value(v));
        }
    }
    true
}

/// The largest document position of any table below `table`.
fn last_table_position(table: &Table) -> isize {
    let mut last = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        if let Some(t) = item.as_table() {
            last = last.max(last_table_position(t));
        }
        if let Some(array) = item.as_array_of_tables() {
            for t in array.iter() {
                last = last.max(last_table_position(t));
            }
        }
    }
    last
}

/// Removes `name` from the table at `path` below `table`, then every table on the path that
/// is left empty and implicit (it printed nothing, so the file never wrote it).
fn remove_path(table: &mut dyn TableLike, path: &[&str], name: &str) {
    let Some((first, rest)) = path.split_first() else {
        table.remove(name);
        return;
    };
    let Some(child) = table.get_mut(first).and_then(Item::as_table_like_mut) else {
        return;
    };
    remove_path(child, rest, name);
    let prints_nothing = table
        .get(first)
        .and_then(Item::as_table)
        .is_some_and(|t| t.is_implicit() && t.is_empty());
    if prints_nothing {
        table.remove(first);
    }
}

fn is_empty_deep(t: &dyn TableLike) -> bool {
    t.iter()
        .all(|(_, item)| item.as_table_like().is_some_and(is_empty_deep))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ConfigFile {
        ConfigFile::parse(text, Path::new("config.toml")).unwrap()
    }

    fn wasmtime() -> Handler {
        Handler {
            name: "wasmtime".into(),
            shim_path: Some("/usr/local/bin/containerd-shim-wasmcell-v1".into()),
        }
    }

    #[test]
    fn a_version_3_config_gets_the_cri_runtime_plugins_table_appended() {
        let mut c = parse("version = 3\n");
        assert_eq!(c.set_handler(3, &wasmtime()).unwrap(), Edit::Added);
        let text = c.text();
        assert!(
            text.contains(
                "[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\n\
                 runtime_type = \"io.containerd.wasmcell.v1\"\n\
                 runtime_path = \"/usr/local/bin/containerd-shim-wasmcell-v1\"\n"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("version = 3\n\n# The wasmcell runtime handler"),
            "{text}"
        );
    }

    #[test]
    fn a_version_2_config_gets_the_grpc_cri_plugins_table() {
        let mut c = parse("version = 2\n");
        c.set_handler(2, &wasmtime()).unwrap();
        assert!(c
            .text()
            .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"));
    }

    #[test]
    fn a_second_install_changes_nothing() {
        let mut c = parse("version = 3\n");
        c.set_handler(3, &wasmtime()).unwrap();
        let once = c.text();
        assert_eq!(c.set_handler(3, &wasmtime()).unwrap(), Edit::Unchanged);
        assert_eq!(c.text(), once);
        // Reparsed from its text, as a second run of the command sees it.
        let mut again = parse(&once);
        assert_eq!(again.set_handler(3, &wasmtime()).unwrap(), Edit::Unchanged);
        assert_eq!(again.text(), once);
    }

    const USERS: &str = r#"# my node's containerd
version = 2
root = "/var/lib/containerd"   # keep this comment

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false

# the end
"#;

    #[test]
    fn the_users_comments_layout_and_other_runtimes_are_kept_byte_for_byte() {
        let mut c = parse(USERS);
        assert_eq!(c.set_handler(2, &wasmtime()).unwrap(), Edit::Added);
        let text = c.text();
        assert!(text.starts_with(USERS), "the user's part changed:\n{text}");
        assert!(text[USERS.len()..]
            .contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.wasmtime]"));
        assert_eq!(c.remove_handler(2, "wasmtime").unwrap(), Edit::Removed);
        assert_eq!(c.text(), USERS);
    }

    #[test]
    fn uninstall_after_install_gives_back_the_file_it_was() {
        // (A file without a final newline would get one.)
        for original in ["version = 3\n", "version = 3\n\n# trailing\n\n", USERS] {
            let mut c = parse(original);
            c.set_handler(3, &wasmtime()).unwrap();
            let mut reread = parse(&c.text());
            assert_eq!(reread.remove_handler(3, "wasmtime").unwrap(), Edit::Removed);
            assert_eq!(reread.text(), original);
        }
    }

    #[test]
    fn an_existing_handler_with_other_values_is_updated_and_keeps_its_other_keys() {
        let text = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\n  runtime_type = \"io.containerd.other.v1\" # was\n  pod_annotations = [\"a\"]\n";
        let mut c = parse(text);
        assert_eq!(c.set_handler(3, &wasmtime()).unwrap(), Edit::Updated);
        let out = c.text();
        assert!(
            out.contains("runtime_type = \"io.containerd.wasmcell.v1\" # was"),
            "{out}"
        );
        assert!(
            out.contains(r#"pod_annotations = ["a", "wasmcell.dev/*", "*.wasmcell.dev/*"]"#),
            "the user's pattern is kept, wasmcell's added: {out}"
        );
        assert!(
            out.contains(
                r#"container_annotations = ["io.kubernetes.container.terminationMessagePath"]"#
            ),
            "{out}"
        );
        // Once there, nothing changes.
        let mut again = parse(&out);
        assert_eq!(again.set_handler(3, &wasmtime()).unwrap(), Edit::Unchanged);
    }

    #[test]
    fn the_default_runtime_is_written_out_for_containerd_1_and_removed_with_the_handler() {
        let original = "version = 2\n";
        let mut c = parse(original);
        assert!(c.keep_default_runtime(2, &[], &[]).unwrap());
        c.set_handler(2, &wasmtime()).unwrap();
        let text = c.text();
        assert!(
            text.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n"),
            "{text}"
        );
        let mut again = parse(&text);
        assert!(
            !again.keep_default_runtime(2, &[], &[]).unwrap(),
            "listed now"
        );
        again.remove_handler(2, "wasmtime").unwrap();
        assert_eq!(again.text(), original);
        // A runc the user wrote stays.
        let mut users = parse(USERS);
        assert!(!users.keep_default_runtime(2, &[], &[]).unwrap());
        users.set_handler(2, &wasmtime()).unwrap();
        users.remove_handler(2, "wasmtime").unwrap();
        assert_eq!(users.text(), USERS);
        let other = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\ndefault_runtime_name = \"crun\"\n";
        assert!(parse(other).keep_default_runtime(2, &[], &[]).is_err());
    }

    #[test]
    fn the_default_runtime_keeps_the_settings_containerd_gives_it() {
        // containerd 1.7's built-in runc runs pods in its podsandbox mode.
        let original = "version = 2\n";
        let mut c = parse(original);
        let builtin = [(
            "sandbox_mode".to_owned(),
            toml_edit::Value::from("podsandbox"),
        )];
        assert!(c.keep_default_runtime(2, &builtin, &[]).unwrap());
        c.set_handler(2, &wasmtime()).unwrap();
        let text = c.text();
        assert!(
            text.contains("runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\nsandbox_mode = \"podsandbox\"\n"),
            "{text}"
        );
        let mut again = parse(&text);
        again.remove_handler(2, "wasmtime").unwrap();
        assert_eq!(again.text(), original);
    }

    #[test]
    fn pulling_through_the_client_is_added_once_and_removed_with_the_handler() {
        for original in [
            "version = 3\n# the end\n",
            "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\n  max_concurrent_downloads = 2\n",
        ] {
            let mut c = parse(original);
            c.set_handler(3, &wasmtime()).unwrap();
            assert_eq!(c.pull_through_client().unwrap(), LocalPull::Added);
            let text = c.text();
            assert!(text.contains("use_local_image_pull = true"), "{text}");
            let mut again = parse(&text);
            assert_eq!(again.pull_through_client().unwrap(), LocalPull::Already);
            assert!(again.remove_pull_through_client());
            again.remove_handler(3, "wasmtime").unwrap();
            assert_eq!(again.text(), original);
        }
        // A file with only the plugin's sub-tables gets its header, and loses it again.
        let subtables = "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n";
        let mut c = parse(subtables);
        c.set_handler(3, &wasmtime()).unwrap();
        assert_eq!(c.pull_through_client().unwrap(), LocalPull::Added);
        let mut again = parse(&c.text());
        assert_eq!(again.pull_through_client().unwrap(), LocalPull::Already);
        assert!(again.remove_pull_through_client());
        again.remove_handler(3, "wasmtime").unwrap();
        assert_eq!(again.text(), subtables);
        // An inline table is refused with what to do.
        let inline = "version = 3\n[plugins]\n\"io.containerd.cri.v1.images\" = { max_concurrent_downloads = 2 }\n";
        let err = parse(inline).pull_through_client().unwrap_err().to_string();
        assert!(err.contains("by hand"), "{err}");
        // The user's own choice stays, either way.
        let off = "version = 3\n[plugins.\"io.containerd.cri.v1.images\"]\nuse_local_image_pull = false\n";
        let mut c = parse(off);
        assert_eq!(c.pull_through_client().unwrap(), LocalPull::TurnedOff);
        assert!(!c.remove_pull_through_client());
        assert_eq!(c.text(), off);
    }

    #[test]
    fn a_handler_of_another_runtime_is_not_removed() {
        let text = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.wasmtime]\nruntime_type = \"io.containerd.other.v1\"\n";
        let mut c = parse(text);
        let err = c.remove_handler(3, "wasmtime").unwrap_err().to_string();
        assert!(err.contains("io.containerd.other.v1"), "{err}");
        assert_eq!(c.text(), text);
    }

    #[test]
    fn removing_a_handler_that_is_not_there_changes_nothing() {
        let mut c = parse(USERS);
        assert_eq!(c.remove_handler(2, "wasmtime").unwrap(), Edit::Unchanged);
        assert_eq!(c.text(), USERS);
    }

    #[test]
    fn versions_and_their_errors() {
        assert_eq!(parse("").version().unwrap(), 1);
        assert_eq!(parse("version = 3").version().unwrap(), 3);
        assert!(parse("version = \"3\"").version().is_err());
        let v1 = cri_runtime_plugin(1).unwrap_err().to_string();
        assert!(v1.contains("containerd config migrate"), "{v1}");
        let v9 = cri_runtime_plugin(9).unwrap_err().to_string();
        assert!(v9.contains("unknown config version 9"), "{v9}");
        assert_eq!(version_for_containerd(1), 2);
        assert_eq!(version_for_containerd(2), 3);
    }

    #[test]
    fn broken_toml_is_an_error_naming_the_file() {
        let err = ConfigFile::parse("version = 3\n[plugins\n", Path::new("/etc/c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/c.toml is not valid TOML"), "{err}");
    }

    #[test]
    fn a_cri_settings_key_that_is_not_a_table_is_an_error() {
        let mut c = parse("version = 3\nplugins = 5\n");
        let err = c.set_handler(3, &wasmtime()).unwrap_err().to_string();
        assert!(err.contains("`plugins`"), "{err}");
    }

    #[test]
    fn dotted_keys_in_the_users_file_are_followed() {
        let text = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\"]\ncontainerd.runtimes.wasmtime.runtime_type = \"io.containerd.wasmcell.v1\"\ncontainerd.runtimes.wasmtime.runtime_path = \"/usr/local/bin/containerd-shim-wasmcell-v1\"\ncontainerd.runtimes.wasmtime.pod_annotations = [\"wasmcell.dev/*\", \"*.wasmcell.dev/*\"]\ncontainerd.runtimes.wasmtime.container_annotations = [\"io.kubernetes.container.terminationMessagePath\"]\n";
        let mut c = parse(text);
        assert_eq!(c.set_handler(3, &wasmtime()).unwrap(), Edit::Unchanged);
        assert_eq!(c.text(), text);
        // Without the lists, they are added as dotted keys too.
        let short = text.lines().take(4).collect::<Vec<_>>().join("\n") + "\n";
        let mut c = parse(&short);
        assert_eq!(c.set_handler(3, &wasmtime()).unwrap(), Edit::Updated);
        assert_eq!(
            parse(&c.text()).set_handler(3, &wasmtime()).unwrap(),
            Edit::Unchanged,
            "{}",
            c.text()
        );
    }

    #[test]
    fn imports_are_read_and_can_be_set() {
        let mut c = parse("version = 3\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n");
        assert_eq!(c.imports().unwrap(), ["/etc/containerd/conf.d/*.toml"]);
        c.set_imports(vec!["/a.toml".into(), "/b.toml".into()]);
        assert_eq!(c.imports().unwrap(), ["/a.toml", "/b.toml"]);
        assert!(parse("imports = 3").imports().is_err());
    }

    #[test]
    fn a_minimal_file_is_recognised_after_its_handler_is_removed() {
        let mut c = ConfigFile::minimal(3);
        assert!(c.is_minimal());
        c.set_handler(3, &wasmtime()).unwrap();
        assert!(!c.is_minimal());
        let mut reread = parse(&c.text());
        reread.remove_handler(3, "wasmtime").unwrap();
        assert!(reread.is_minimal());
        assert!(!parse("version = 3\n").is_minimal());
    }
}

//! Deterministic tar archives: fixed mtime, owner and order, so digests only depend on content.

use std::collections::{BTreeMap, BTreeSet};

use tar::{EntryType, Header};

use crate::{Error, ImageFile, ImageSymlink, Result};

fn io(context: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        context: context.to_owned(),
        source,
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A tar of plain files, in name order.
pub fn deterministic_tar(entries: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = header(EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, name, &data[..]).map_err(io(name))?;
    }
    b.into_inner().map_err(io("finish tar"))
}

fn relative(path: &str) -> Result<String> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(Error::Invalid(format!(
            "image path {path:?} must be absolute and free of '.', '..' and '//'"
        )));
    }
    Ok(rel.to_owned())
}

/// The rootfs layer: every parent directory, then files and symlinks, in path order.
pub fn rootfs_layer(files: &[ImageFile], links: &[ImageSymlink]) -> Result<Vec<u8>> {
    let mut dirs = BTreeSet::new();
    let mut items: BTreeMap<String, Option<&ImageFile>> = BTreeMap::new();
    let mut targets: BTreeMap<String, &str> = BTreeMap::new();
    for f in files {
        let rel = relative(&f.path)?;
        if items.insert(rel.clone(), Some(f)).is_some() {
            return Err(Error::Invalid(format!("{} is given twice", f.path)));
        }
    }
    for l in links {
        let rel = relative(&l.path)?;
        if items.insert(rel.clone(), None).is_some() {
            return Err(Error::Invalid(format!("{} is given twice", l.path)));
        }
        targets.insert(rel, &l.target);
    }
    for rel in items.keys() {
        let mut parent = rel.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            dirs.insert(format!("{p}/"));
            parent = p;
        }
    }
    let mut b = tar::Builder::new(Vec::new());
    for d in &dirs {
        let mut h = header(EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, std::io::empty()).map_err(io(d))?;
    }
    for (rel, file) in &items {
        match file {
            Some(f) => {
                let mut h = header(EntryType::Regular, f.mode, f.contents.len() as u64);
                b.append_data(&mut h, rel, &f.contents[..])
                    .map_err(io(rel))?;
            }
            None => {
                let mut h = header(EntryType::Symlink, 0o777, 0);
                let target = targets.get(rel).copied().unwrap_or_default();
                b.append_link(&mut h, rel, target).map_err(io(rel))?;
            }
        }
    }
    b.into_inner().map_err(io("finish layer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escaping_paths() {
        for bad in ["/../x", "/a/./b", "/", "/a//b"] {
            let f = ImageFile {
                path: bad.into(),
                contents: vec![],
                mode: 0o644,
            };
            assert!(rootfs_layer(&[f], &[]).is_err(), "{bad}");
        }
    }
}

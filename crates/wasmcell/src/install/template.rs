//! The block install appends to a containerd config template that a distribution renders at
//! every start (k3s's and RKE2's `config-v3.toml.tmpl` / `config.toml.tmpl`).
//!
//! A template is Go `text/template` text, not TOML, so it is not parsed: install appends
//! literal TOML between two marker lines and uninstall cuts exactly that span out again. Text
//! appended to a template is appended as it is to what it renders, so the rendered config
//! with the same block appended is what containerd will load, and install checks that with
//! containerd before it writes the template. The renderer drops blank lines and puts one before
//! each table header; the markers are comment lines, so the cut works on the rendered file too.
//!
//! With no template, install writes one that renders the distribution's own config first
//! (`{{ template "base" . }}`) and marks it as its own, so that uninstall removes the file.

use anyhow::{bail, Result};

/// The first marker line, without its note.
const BEGIN: &str = "# wasmcell install: begin";
/// The last marker line.
const END: &str = "# wasmcell install: end";
/// What the begin marker says when install wrote the whole file.
const CREATED: &str = "(wasmcell install --uninstall removes this file, which it wrote)";
/// What the begin marker says when install put a newline before it (the template did not end
/// with one), which uninstall removes with the block.
const JOINED: &str =
    "(wasmcell install --uninstall removes this block and the line break before it)";
/// What the begin marker says otherwise.
const PLAIN: &str = "(wasmcell install --uninstall removes this block)";

/// A template that renders the distribution's own configuration, for a block to follow.
pub const BASE_ONLY: &str = "{{ template \"base\" . }}\n";

/// `toml`, the TOML body of the block (tables only), between the marker lines.
fn block(toml: &str, note: &str) -> String {
    let body = toml.trim_matches('\n');
    format!("{BEGIN} {note}\n{body}\n{END}\n")
}

/// The template `before` (None: there is none) with the block holding `toml` in place of any
/// block it has.
pub fn with_block(before: Option<&str>, toml: &str) -> Result<String> {
    if toml.contains("{{") {
        bail!("the TOML to add to the template contains `{{{{`, which the renderer would read");
    }
    let Some(before) = before else {
        return Ok(format!("{BASE_ONLY}{}", block(toml, CREATED)));
    };
    if let Some(cut) = cut(before)? {
        // The block is replaced where it is, with the note it had.
        let note = if cut.created {
            CREATED
        } else if cut.joined {
            JOINED
        } else {
            PLAIN
        };
        let (head, tail) = before.split_at(cut.start);
        let tail = &tail[cut.end - cut.start..];
        return Ok(format!("{head}{}{tail}", block(toml, note)));
    }
    if before.is_empty() || before.ends_with('\n') {
        Ok(format!("{before}{}", block(toml, PLAIN)))
    } else {
        Ok(format!("{before}\n{}", block(toml, JOINED)))
    }
}

/// What [`without_block`] leaves.
#[derive(Debug, PartialEq, Eq)]
pub enum Without {
    /// The text had no block.
    NoBlock,
    /// The text without the block.
    Text(String),
    /// Install wrote the whole file: it goes.
    Remove,
}

/// `text` (a template, or what it rendered) without the block install added.
pub fn without_block(text: &str) -> Result<Without> {
    let Some(cut) = cut(text)? else {
        return Ok(Without::NoBlock);
    };
    let rest = cut_out(text, &cut);
    // A file install wrote goes as a whole only while it holds nothing the user added.
    if cut.created && rest == BASE_ONLY {
        return Ok(Without::Remove);
    }
    Ok(Without::Text(rest))
}

/// `text` without the block at `cut`; the line break install put before a block that ended
/// the file goes too, but only while the block still ends it (text after it keeps its line).
fn cut_out(text: &str, cut: &Cut) -> String {
    let start = if cut.joined && cut.end == text.len() && text[..cut.start].ends_with('\n') {
        cut.start - 1
    } else {
        cut.start
    };
    format!("{}{}", &text[..start], &text[cut.end..])
}

/// What a template renders without install's block: `rendered` with the block's lines cut out
/// if it has them (the block was in the template when it was rendered), else as it is.
pub fn without_rendered_block(rendered: &str) -> Result<String> {
    Ok(match cut(rendered)? {
        None => rendered.to_owned(),
        Some(c) => cut_out(rendered, &c),
    })
}

/// The TOML between the markers, if `text` has a block. Blank lines are left out: the
/// renderer adds and drops them, so a template's block and the same block rendered compare
/// equal.
pub fn block_body(text: &str) -> Result<Option<String>> {
    Ok(cut(text)?.map(|c| {
        let inner = &text[c.start..c.end];
        let lines: Vec<&str> = inner.lines().collect();
        lines[1..lines.len() - 1]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    }))
}

/// Where a block is: byte offsets of its first line and just past its last.
struct Cut {
    start: usize,
    end: usize,
    created: bool,
    joined: bool,
}

fn cut(text: &str) -> Result<Option<Cut>> {
    let mut offset = 0;
    let mut begin: Option<(usize, &str)> = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if bare.starts_with(BEGIN) {
            if begin.is_some() {
                bail!("the template has two `{BEGIN}` lines: fix it by hand");
            }
            begin = Some((offset, bare));
        } else if bare == END {
            let Some((start, first)) = begin else {
                bail!("the template has `{END}` without `{BEGIN}` before it: fix it by hand");
            };
            return Ok(Some(Cut {
                start,
                end: offset + line.len(),
                created: first.contains(CREATED),
                joined: first.contains(JOINED),
            }));
        }
        offset += line.len();
    }
    match begin {
        Some(_) => bail!("the template has `{BEGIN}` without `{END}` after it: fix it by hand"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "\n[plugins.\"x\".runtimes.wasmtime]\n  runtime_type = \"t\"\n";

    #[test]
    fn a_new_template_renders_the_base_then_the_block_and_goes_as_a_whole() {
        let t = with_block(None, TOML).unwrap();
        assert!(t.starts_with(BASE_ONLY), "{t}");
        assert!(
            t.ends_with("  runtime_type = \"t\"\n# wasmcell install: end\n"),
            "{t}"
        );
        assert_eq!(without_block(&t).unwrap(), Without::Remove);
    }

    #[test]
    fn a_template_gets_the_block_appended_and_back_byte_for_byte() {
        for before in ["", "{{ template \"base\" . }}\n# mine\n", "a = 1"] {
            let t = with_block(Some(before), TOML).unwrap();
            assert!(t.starts_with(before));
            assert_eq!(
                without_block(&t).unwrap(),
                Without::Text(before.to_owned()),
                "{t:?}"
            );
            // Again: the block is replaced, not added twice.
            let again = with_block(Some(&t), TOML).unwrap();
            assert_eq!(again, t);
            let changed = with_block(Some(&t), "[y]\n").unwrap();
            assert_eq!(block_body(&changed).unwrap().as_deref(), Some("[y]"));
            assert_eq!(
                without_block(&changed).unwrap(),
                Without::Text(before.to_owned())
            );
        }
    }

    #[test]
    fn what_the_user_added_around_the_block_is_kept_by_uninstall() {
        // A template install wrote, with a line added after it: the file stays, with the line.
        let created = format!("{}[x]\n", with_block(None, TOML).unwrap());
        assert_eq!(
            without_block(&created).unwrap(),
            Without::Text(format!("{BASE_ONLY}[x]\n"))
        );
        // A block install joined to a last line, then a line added after it: both lines stay
        // lines.
        let joined = format!("{}[y]\n", with_block(Some("a = 1"), TOML).unwrap());
        assert_eq!(
            without_block(&joined).unwrap(),
            Without::Text("a = 1\n[y]\n".into())
        );
        assert_eq!(without_rendered_block(&joined).unwrap(), "a = 1\n[y]\n");
    }

    #[test]
    fn the_block_is_cut_from_a_rendering_with_blank_lines_added() {
        let rendered = format!(
            "version = 3\n\n[a]\n  b = 1\n{BEGIN} {PLAIN}\n\n[plugins.x]\n  runtime_type = \"t\"\n{END}\n"
        );
        assert_eq!(
            without_block(&rendered).unwrap(),
            Without::Text("version = 3\n\n[a]\n  b = 1\n".into())
        );
        // What a template install wrote as a whole renders: the base, then the block.
        let whole = with_block(None, TOML)
            .unwrap()
            .replace(BASE_ONLY, "version = 3\n");
        assert_eq!(without_rendered_block(&whole).unwrap(), "version = 3\n");
        assert_eq!(without_rendered_block("a = 1\n").unwrap(), "a = 1\n");
    }

    #[test]
    fn broken_markers_are_refused() {
        let e = without_block(&format!("{BEGIN}\nx\n")).unwrap_err();
        assert!(e.to_string().contains("without"), "{e}");
        let e = without_block(&format!("x\n{END}\n")).unwrap_err();
        assert!(e.to_string().contains("without"), "{e}");
        assert!(with_block(None, "a = \"{{ x }}\"").is_err());
    }
}

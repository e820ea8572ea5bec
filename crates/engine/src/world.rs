//! What a component offers, read from its top-level exports before it is compiled.
//!
//! The engine's configuration depends on it (serving HTTP needs epoch interruption, so that a
//! request can be cut off at its deadline, and the pooling allocator), and compiled code only
//! runs in an engine configured as it was compiled: so the choice is made from the bytes, the
//! same way by every process that compiles or loads the program.

/// The interface a `wasi:http/proxy` component exports: the host calls it once per request.
pub const HTTP_HANDLER: &str = "wasi:http/incoming-handler";
/// The interface a `wasi:cli/command` component exports: the host calls it once.
pub const CLI_RUN: &str = "wasi:cli/run";

/// Whether wasm bytes are a component (layer 1) rather than a core module.
pub fn is_component(wasm: &[u8]) -> bool {
    wasm.len() >= 8 && &wasm[..4] == b"\0asm" && wasm[4..8] == [0x0d, 0, 1, 0]
}

/// What a program does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// It runs to its exit (a core module's `_start`, a component's `wasi:cli/run`).
    Command,
    /// It serves HTTP until drained (a component's `wasi:http/incoming-handler`).
    HttpHandler,
}

/// The names a component exports at its top level (nested components' exports are not its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exports {
    /// Export names as written, versions included (`wasi:cli/run@0.2.3`).
    pub names: Vec<String>,
}

impl Exports {
    /// The top-level exports of `wasm`: none for a core module, and none for bytes that do not
    /// parse (compiling them reports what is wrong).
    pub fn of(wasm: &[u8]) -> Exports {
        let mut names = Vec::new();
        let mut depth = 0usize;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            let Ok(payload) = payload else {
                return Exports::default();
            };
            match payload {
                wasmparser::Payload::Version { .. } => depth += 1,
                wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
                wasmparser::Payload::ComponentExportSection(reader) if depth == 1 => {
                    for export in reader {
                        let Ok(export) = export else {
                            return Exports::default();
                        };
                        names.push(export.name.name.to_owned());
                    }
                }
                _ => {}
            }
        }
        Exports { names }
    }

    /// Whether it exports `interface` at any version.
    pub fn has(&self, interface: &str) -> bool {
        self.names
            .iter()
            .any(|n| n.split('@').next() == Some(interface))
    }

    /// Whether it can be served: it exports `wasi:http/incoming-handler`.
    pub fn handles_http(&self) -> bool {
        self.has(HTTP_HANDLER)
    }

    /// What a program with these exports does: a component exporting
    /// `wasi:http/incoming-handler` is served, unless it is also a command and serving was not
    /// asked for (`serve_requested`: the workload's `http-serve` setting); anything else runs
    /// as a command. The one place this is decided.
    pub fn mode(&self, serve_requested: bool) -> Mode {
        if self.handles_http() && (!self.has(CLI_RUN) || serve_requested) {
            Mode::HttpHandler
        } else {
            Mode::Command
        }
    }

    /// The exports, for an error message.
    pub fn describe(&self) -> String {
        if self.names.is_empty() {
            "nothing".to_owned()
        } else {
            self.names.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_exports_of_a_component_and_none_of_a_module() {
        let component = wat::parse_str(
            r#"(component
                 (component $inner
                   (type $t u32)
                   (export "wasi:http/incoming-handler@0.2.0" (type $t)))
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (instance $run (export "run" (func $f)))
                 (export "wasi:cli/run@0.2.3" (instance $run)))"#,
        )
        .expect("component");
        let exports = Exports::of(&component);
        assert_eq!(exports.names, ["wasi:cli/run@0.2.3"]);
        assert!(exports.has(CLI_RUN));
        assert!(!exports.handles_http());

        let module = wat::parse_str(r#"(module (func (export "_start")))"#).expect("module");
        assert_eq!(Exports::of(&module), Exports::default());
        assert_eq!(Exports::of(b"garbage").describe(), "nothing");
    }
}

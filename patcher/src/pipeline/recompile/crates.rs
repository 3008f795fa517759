//! The local crates of the running program (the binary crate and the workspace members and
//! path dependencies compiled with it) and how an edit ripples through them: the edited
//! crates and every local crate that depends on them, up to the binary, dependencies first.
//! The graph comes from the recorded invocations' `--extern` flags.

use linker_shim::RustcInvocation;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Index of a crate in [`LocalCrates`], stable for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CrateIndex(usize);

/// What a local crate is to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrateRole {
    /// The executable being patched.
    Binary,
    /// Linked into it as an rlib.
    Library,
    /// Runs inside the compiler: a change alters the code it generates everywhere.
    ProcMacro,
    /// `build.rs`: runs before the build.
    BuildScript,
    /// Another binary, example or test target: not part of the running program.
    OtherExecutable,
}

/// One local crate.
#[derive(Debug, Clone)]
pub struct LocalCrate {
    pub invocation: RustcInvocation,
    pub role: CrateRole,
    /// The local crates its `--extern` flags name.
    dependencies: Vec<CrateIndex>,
}

impl LocalCrate {
    pub fn name(&self) -> &str {
        &self.invocation.crate_name
    }

    /// Where rustc wrote its outputs in the base build.
    pub fn base_out_dir(&self) -> PathBuf {
        self.invocation.out_dir()
    }

    /// `lib<crate><extra-filename>`: the stem of its rlib, rmeta and proc-macro files.
    fn output_stem(&self) -> String {
        format!(
            "lib{}{}",
            self.invocation.crate_name,
            self.invocation.extra_filename()
        )
    }
}

/// The local crates of one build.
#[derive(Debug, Clone)]
pub struct LocalCrates {
    crates: Vec<LocalCrate>,
    binary: CrateIndex,
}

impl LocalCrates {
    /// The crates of a build whose binary crate was compiled by `binary`, from the latest
    /// invocations of the local crates (`recorded`, which may include `binary` again).
    pub fn new(binary: &RustcInvocation, recorded: &[RustcInvocation]) -> LocalCrates {
        let mut crates = vec![LocalCrate {
            invocation: binary.clone(),
            role: CrateRole::Binary,
            dependencies: Vec::new(),
        }];
        crates.extend(
            recorded
                .iter()
                .filter(|invocation| invocation.key() != binary.key())
                .map(|invocation| LocalCrate {
                    role: role_of(invocation),
                    invocation: invocation.clone(),
                    dependencies: Vec::new(),
                }),
        );
        let stems: Vec<String> = crates.iter().map(LocalCrate::output_stem).collect();
        for krate in &mut crates {
            krate.dependencies = extern_paths(&krate.invocation.args)
                .filter_map(|path| {
                    let stem = path.file_stem()?.to_string_lossy();
                    stems.iter().position(|s| *s == stem).map(CrateIndex)
                })
                .collect();
        }
        LocalCrates {
            crates,
            binary: CrateIndex(0),
        }
    }

    pub fn get(&self, index: CrateIndex) -> &LocalCrate {
        &self.crates[index.0]
    }

    pub fn binary(&self) -> CrateIndex {
        self.binary
    }

    /// Every crate with its index.
    pub fn iter(&self) -> impl Iterator<Item = (CrateIndex, &LocalCrate)> {
        self.crates
            .iter()
            .enumerate()
            .map(|(index, krate)| (CrateIndex(index), krate))
    }

    /// True when the running program is made from `index`: the binary crate or a library it
    /// links, directly or not.
    pub fn is_linked(&self, index: CrateIndex) -> bool {
        self.linked_in_order().contains(&index)
    }

    /// The libraries to recompile when `edited` changed: those edited and those depending
    /// on them, among the libraries the binary links; dependencies first.
    pub fn libraries_to_rebuild(&self, edited: &BTreeSet<CrateIndex>) -> Vec<CrateIndex> {
        let mut affected: BTreeSet<CrateIndex> = BTreeSet::new();
        let mut order = Vec::new();
        for index in self.linked_in_order() {
            let krate = self.get(index);
            let touched = edited.contains(&index)
                || krate.dependencies.iter().any(|dep| affected.contains(dep));
            if touched && krate.role == CrateRole::Library {
                affected.insert(index);
                order.push(index);
            }
        }
        order
    }

    /// The libraries the binary links, each after its dependencies.
    pub fn libraries(&self) -> Vec<CrateIndex> {
        self.linked_in_order()
            .into_iter()
            .filter(|&index| self.get(index).role == CrateRole::Library)
            .collect()
    }

    /// The binary and the libraries it links, each after its dependencies.
    fn linked_in_order(&self) -> Vec<CrateIndex> {
        fn visit(crates: &LocalCrates, index: CrateIndex, seen: &mut Vec<CrateIndex>) {
            if seen.contains(&index) {
                return;
            }
            let krate = crates.get(index);
            for &dep in &krate.dependencies {
                if crates.get(dep).role == CrateRole::Library {
                    visit(crates, dep, seen);
                }
            }
            seen.push(index);
        }
        let mut order = Vec::new();
        visit(self, self.binary, &mut order);
        order
    }
}

fn role_of(invocation: &RustcInvocation) -> CrateRole {
    let is = |kind: &str| invocation.crate_types.iter().any(|t| t == kind);
    if invocation.crate_name == "build_script_build" {
        CrateRole::BuildScript
    } else if is("proc-macro") {
        CrateRole::ProcMacro
    } else if invocation.is_library() {
        CrateRole::Library
    } else {
        CrateRole::OtherExecutable
    }
}

/// The paths of `--extern [options:]name=path` flags (a bare `--extern name` has none).
pub(crate) fn extern_paths(args: &[String]) -> impl Iterator<Item = &Path> {
    args.windows(2)
        .filter(|pair| pair[0] == "--extern")
        .filter_map(|pair| pair[1].split_once('=').map(|(_, path)| Path::new(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn invocation(name: &str, kind: &str, externs: &[&str]) -> RustcInvocation {
        let mut args: Vec<String> = ["--crate-name", name, "--crate-type", kind]
            .map(String::from)
            .into();
        args.push(format!("extra-filename=-{name}1"));
        for dep in externs {
            args.push("--extern".into());
            args.push(format!("{dep}=/t/deps/lib{dep}-{dep}1.rmeta"));
        }
        RustcInvocation {
            rustc: "rustc".into(),
            args,
            extra_args: Vec::new(),
            links_through_shim: false,
            env: BTreeMap::new(),
            cwd: "/w".into(),
            package: name.into(),
            crate_name: name.into(),
            crate_types: vec![kind.into()],
            source: None,
            profile: "dev".into(),
        }
    }

    fn names(crates: &LocalCrates, order: &[CrateIndex]) -> Vec<String> {
        order
            .iter()
            .map(|&i| crates.get(i).name().to_owned())
            .collect()
    }

    #[test]
    fn an_edit_rebuilds_its_crate_and_the_dependents_in_order() {
        let binary = invocation("app", "bin", &["mid", "side"]);
        let crates = LocalCrates::new(
            &binary,
            &[
                invocation("side", "lib", &[]),
                invocation("corelib", "lib", &[]),
                invocation("mid", "lib", &["corelib", "derive"]),
                invocation("derive", "proc-macro", &[]),
                invocation("unrelated", "lib", &[]),
            ],
        );
        let index = |name: &str| crates.iter().find(|(_, c)| c.name() == name).unwrap().0;
        let rebuild = |edited: &[&str]| {
            let edited = edited.iter().map(|name| index(name)).collect();
            names(&crates, &crates.libraries_to_rebuild(&edited))
        };
        assert_eq!(rebuild(&["corelib"]), ["corelib", "mid"]);
        assert_eq!(rebuild(&["side"]), ["side"]);
        assert_eq!(rebuild(&["app"]), Vec::<String>::new());
        assert_eq!(rebuild(&["unrelated"]), Vec::<String>::new());
        assert!(!crates.is_linked(index("unrelated")));
        assert!(!crates.is_linked(index("derive")));
        assert!(crates.is_linked(index("corelib")));
        assert_eq!(crates.get(index("derive")).role, CrateRole::ProcMacro);
    }
}

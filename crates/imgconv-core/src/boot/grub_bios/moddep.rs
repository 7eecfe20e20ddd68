//! `moddep.lst`: which GRUB modules each module needs, and the order in which modules
//! are embedded in core.img.
//!
//! Format (written by GRUB's `genmoddep.awk`): one line per module, `name: dep dep …`,
//! deps separated by whitespace, possibly none (`part_msdos:`). `grub-mkimage` reads it in
//! `util/resolve.c`: for each requested module it first adds the module's dependencies
//! (depth first, skipping modules already added), then the module itself, so the result
//! is a post-order list, dependencies before dependents. The kernel links embedded
//! modules in that order while `$prefix` is not yet set, so a dependency missing from
//! core.img cannot be fetched from disk.
//!
//! Details matched so our list equals grub-mkimage's for the same input: a module's deps
//! are visited in reverse of their order on the line (resolve.c builds the list by
//! prepending), and when a module has two lines the later one wins. Unlike resolve.c
//! (which would recurse forever), a cycle is an error, and so is a module or dependency
//! that moddep.lst does not know.

use super::super::BootError;
use std::collections::{BTreeMap, BTreeSet};

/// The dependency lists of `moddep.lst`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModDeps {
    deps: BTreeMap<String, Vec<String>>,
}

impl ModDeps {
    /// Parse `moddep.lst`. Blank lines are skipped; any other line without `:` is an
    /// error (as in resolve.c).
    pub fn parse(text: &[u8]) -> Result<Self, BootError> {
        let text = String::from_utf8_lossy(text);
        let mut deps = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((name, rest)) = line.split_once(':') else {
                return Err(BootError::ModDepLine {
                    line: i + 1,
                    text: line.chars().take(80).collect(),
                });
            };
            let name = name.trim();
            if !valid_name(name) {
                return Err(BootError::ModDepLine {
                    line: i + 1,
                    text: line.chars().take(80).collect(),
                });
            }
            let list = rest.split_whitespace().map(str::to_string).collect();
            deps.insert(name.to_string(), list);
        }
        Ok(ModDeps { deps })
    }

    /// The dependencies of `module` as listed, or `None` if moddep.lst does not know it.
    pub fn deps(&self, module: &str) -> Option<&[String]> {
        self.deps.get(module).map(Vec::as_slice)
    }

    /// Number of modules listed.
    pub fn len(&self) -> usize {
        self.deps.len()
    }

    /// Whether no module is listed.
    pub fn is_empty(&self) -> bool {
        self.deps.is_empty()
    }

    /// The requested modules with all their dependencies, dependencies first, each once,
    /// in grub-mkimage's order. `name.mod` is accepted for `name`.
    pub fn resolve(&self, requested: &[&str]) -> Result<Vec<String>, BootError> {
        let mut done: Vec<String> = Vec::new();
        let mut added: BTreeSet<String> = BTreeSet::new();
        for &req in requested {
            let req = req.strip_suffix(".mod").unwrap_or(req);
            if !valid_name(req) {
                return Err(BootError::UnknownModule {
                    module: req.to_string(),
                    needed_by: None,
                });
            }
            self.add(req, &mut done, &mut added)?;
        }
        Ok(done)
    }

    /// Depth-first post-order walk from `root`, iterative so that a long chain in a
    /// hostile moddep.lst cannot overflow the stack. `path` holds the modules being
    /// expanded, to detect cycles.
    fn add(
        &self,
        root: &str,
        done: &mut Vec<String>,
        added: &mut BTreeSet<String>,
    ) -> Result<(), BootError> {
        if added.contains(root) {
            return Ok(());
        }
        let deps_of = |module: &str, needed_by: Option<&str>| {
            self.deps(module).ok_or_else(|| BootError::UnknownModule {
                module: module.to_string(),
                needed_by: needed_by.map(str::to_string),
            })
        };
        // Each frame: module name, its deps in visiting order, index of the next dep.
        let mut path: Vec<(&str, Vec<&str>, usize)> = Vec::new();
        let first: Vec<&str> = deps_of(root, None)?
            .iter()
            .rev()
            .map(String::as_str)
            .collect();
        path.push((root, first, 0));
        let mut on_path: BTreeSet<&str> = BTreeSet::from([root]);
        while let Some(top) = path.last_mut() {
            let parent = top.0;
            let next = top.1.get(top.2).copied();
            top.2 += 1;
            let Some(dep) = next else {
                path.pop();
                on_path.remove(parent);
                added.insert(parent.to_string());
                done.push(parent.to_string());
                continue;
            };
            if added.contains(dep) {
                continue;
            }
            if on_path.contains(dep) {
                let pos = path.iter().position(|(n, _, _)| *n == dep).unwrap_or(0);
                let mut chain: Vec<String> =
                    path[pos..].iter().map(|(n, _, _)| n.to_string()).collect();
                chain.push(dep.to_string());
                return Err(BootError::DependencyCycle { chain });
            }
            let dep_deps = deps_of(dep, Some(parent))?
                .iter()
                .rev()
                .map(String::as_str)
                .collect();
            on_path.insert(dep);
            path.push((dep, dep_deps, 0));
        }
        Ok(())
    }
}

/// A module name usable as a file name (`<name>.mod`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
        && !name.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str) -> ModDeps {
        ModDeps::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn orders_dependencies_first_without_duplicates() {
        let d = deps("ext2: fshelp\nfshelp:\nbiosdisk:\npart_msdos:\n\nnormal: extcmd boot terminal\nextcmd:\nboot:\nterminal: extcmd\n");
        assert_eq!(
            d.resolve(&["biosdisk", "part_msdos", "ext2"]).unwrap(),
            ["biosdisk", "part_msdos", "fshelp", "ext2"]
        );
        // Deps are visited in reverse line order, like resolve.c; extcmd only once.
        assert_eq!(
            d.resolve(&["normal", "ext2.mod", "extcmd"]).unwrap(),
            ["extcmd", "terminal", "boot", "normal", "fshelp", "ext2"]
        );
    }

    #[test]
    fn later_line_wins() {
        let d = deps("a: b\na: c\nb:\nc:\n");
        assert_eq!(d.resolve(&["a"]).unwrap(), ["c", "a"]);
    }

    #[test]
    fn unknown_modules_and_deps_are_errors() {
        let d = deps("ext2: fshelp\n");
        match d.resolve(&["ext2"]).unwrap_err() {
            BootError::UnknownModule { module, needed_by } => {
                assert_eq!(module, "fshelp");
                assert_eq!(needed_by.as_deref(), Some("ext2"));
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            d.resolve(&["zfs"]),
            Err(BootError::UnknownModule {
                needed_by: None,
                ..
            })
        ));
        assert!(matches!(
            d.resolve(&["../etc/passwd"]),
            Err(BootError::UnknownModule { .. })
        ));
    }

    #[test]
    fn cycles_are_errors_naming_the_chain() {
        let d = deps("a: b\nb: c\nc: a\n");
        match d.resolve(&["a"]).unwrap_err() {
            BootError::DependencyCycle { chain } => assert_eq!(chain, ["a", "b", "c", "a"]),
            e => panic!("{e}"),
        }
        let selfdep = deps("a: a\n");
        assert!(matches!(
            selfdep.resolve(&["a"]),
            Err(BootError::DependencyCycle { .. })
        ));
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 100_000;
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!("m{i}: m{}\n", i + 1));
        }
        text.push_str(&format!("m{n}:\n"));
        let order = deps(&text).resolve(&["m0"]).unwrap();
        assert_eq!(order.len(), n + 1);
        assert_eq!(order[0], format!("m{n}"));
        assert_eq!(order[n], "m0");
    }

    #[test]
    fn malformed_lines_are_errors() {
        let err = ModDeps::parse(b"ext2: fshelp\nthis line has no colon\n").unwrap_err();
        assert!(
            matches!(err, BootError::ModDepLine { line: 2, .. }),
            "{err}"
        );
        assert!(ModDeps::parse(b": fshelp\n").is_err());
    }
}

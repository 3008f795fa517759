//! How a user names a revision on the command line: an id, `latest`, or `latest~N`.

use linker_shim::{Error, Result, Revision, RevisionId, Store, TargetKey};
use std::str::FromStr;

/// A revision as typed by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionSpec {
    Id(RevisionId),
    /// `latest~N`: N revisions before the newest one (`latest` is `latest~0`).
    BeforeLatest(usize),
}

impl FromStr for RevisionSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        if text == "latest" {
            return Ok(RevisionSpec::BeforeLatest(0));
        }
        if let Some(count) = text.strip_prefix("latest~") {
            return count
                .parse()
                .map(RevisionSpec::BeforeLatest)
                .map_err(|_| format!("`{count}` is not a number"));
        }
        RevisionId::parse(text)
            .map(RevisionSpec::Id)
            .ok_or_else(|| {
                "expected a revision id (see `hotpatch revisions`), `latest` or `latest~N`"
                    .to_owned()
            })
    }
}

impl RevisionSpec {
    /// Finds the revision among those of `target` in `store`.
    pub fn resolve(&self, store: &Store, target: &TargetKey) -> Result<Revision> {
        match self {
            RevisionSpec::Id(id) => store.load(id),
            RevisionSpec::BeforeLatest(back) => {
                let revisions = store.list_for(target)?;
                let count = revisions.len();
                revisions.into_iter().rev().nth(*back).ok_or_else(|| {
                    Error::new(format!(
                        "{target} has {count} revision(s) in {}, so `latest~{back}` does not exist; \
                         run `hotpatch build` after an edit to record another",
                        store.root().display()
                    ))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("latest".parse(), Ok(RevisionSpec::BeforeLatest(0)));
        assert_eq!("latest~2".parse(), Ok(RevisionSpec::BeforeLatest(2)));
        assert!(matches!(
            "1763700000000-42".parse(),
            Ok(RevisionSpec::Id(_))
        ));
        assert!("yesterday".parse::<RevisionSpec>().is_err());
    }
}

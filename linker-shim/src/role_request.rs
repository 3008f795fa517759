//! How a hotpatch process hands work to a child it starts in a helper role (linker, rustc
//! wrapper): JSON in one environment variable, whose presence is what selects the role.
//! Environment variables pass through cargo and rustc untouched, arguments would not.

use crate::error::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request carried in the environment variable [`RoleRequest::ENV`].
pub trait RoleRequest: Serialize + DeserializeOwned {
    /// Name of the environment variable.
    const ENV: &'static str;

    /// The request of this process, if its parent started it in this role.
    fn from_env() -> Option<Result<Self>> {
        let value = std::env::var(Self::ENV).ok()?;
        Some(serde_json::from_str(&value).context(|| format!("malformed {}", Self::ENV)))
    }

    /// The value to put in [`RoleRequest::ENV`].
    fn to_env_value(&self) -> String {
        serde_json::to_string(self).expect("role requests serialise")
    }
}

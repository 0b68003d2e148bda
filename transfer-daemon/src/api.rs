//! The admin API's request and response bodies, shared by the server ([`crate::admin`])
//! and the CLI ([`crate::commands`]): a field renamed on one side is a compile error on
//! the other, not a `null` printed to the user.

use serde::{Deserialize, Serialize};

pub use store::gc::GcReport;
pub use store::scrub::{CheckReport, ScrubReport};
pub use transfer_engine::manager::{RepairReport, TransferStatus};

/// `POST /admin/keys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewKey {
    /// The project the key acts for.
    pub project: String,
}

/// `POST /admin/keys` answer: the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The project it acts for.
    pub project: String,
}

/// One entry of `GET /admin/keys` (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The access key id.
    pub access_key_id: String,
    /// The project it acts for.
    pub project: String,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
}

/// `POST /admin/transfers` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    /// push, pull or copy
    pub mode: String,
    /// receiving site (push, copy)
    #[serde(default)]
    pub to: Option<String>,
    /// sending site (pull, copy)
    #[serde(default)]
    pub from: Option<String>,
    /// `bucket[/prefix]` on the sending site
    pub source: String,
    /// `bucket[/prefix]` on the receiving site (default: as source)
    #[serde(default)]
    pub dest: Option<String>,
    /// higher runs first when transfers queue
    #[serde(default)]
    pub priority: u8,
    /// bytes per second
    #[serde(default)]
    pub rate_limit: Option<u64>,
}

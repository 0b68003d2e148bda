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

/// `POST /admin/tokens` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The project the token acts for.
    pub project: String,
    /// What it may do: `catalog:read`, `catalog:write`, `stage`.
    pub scopes: Vec<String>,
}

/// `POST /admin/tokens` answer: the token is shown this once (only its hash is kept).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The bearer token.
    pub token: String,
    /// Its public id, to list and delete it by.
    pub id: String,
    /// The project it acts for.
    pub project: String,
    /// Its scopes.
    pub scopes: Vec<String>,
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
    /// `bucket[/prefix]` on the sending site, or a dataset version, `ns/name@tag`
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

/// `PUT /admin/buckets/{bucket}/sites/{site}` body: what the site may do with the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRights {
    /// pull the bucket's objects, copy them to a third site, repair the chunks they use
    #[serde(default)]
    pub read: bool,
    /// push objects into the bucket
    #[serde(default)]
    pub write: bool,
}

/// A bucket's share with one site: the `PUT` answer, and each entry of
/// `GET /admin/buckets/{bucket}/sites`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketShare {
    /// The bucket.
    pub bucket: String,
    /// The federation site it is shared with.
    pub site: String,
    /// The site may read it.
    pub read: bool,
    /// The site may write into it.
    pub write: bool,
    /// When it was last set, ms since the Unix epoch.
    pub created_ms: i64,
}

impl BucketShare {
    /// The rights in words, for people.
    pub fn rights(&self) -> &'static str {
        match (self.read, self.write) {
            (true, true) => "read and write",
            (true, false) => "read",
            (false, true) => "write",
            (false, false) => "nothing",
        }
    }
}

/// `DELETE /admin/buckets/{bucket}/sites/{site}` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unshared {
    /// The bucket.
    pub bucket: String,
    /// The site.
    pub site: String,
    /// Whether it was shared with the site before.
    pub was_shared: bool,
}

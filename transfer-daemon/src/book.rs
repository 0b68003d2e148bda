//! The catalog as the transfer engine's book of dataset versions: what it may send and
//! to whom, and how a version that arrived is recorded (see `transfer_engine::versions`);
//! and the transfer engine as the catalog's rules use it.

use catalog::in_store::InStore;
use catalog::rules::{CopyState, Replicator, Started};
use catalog::{Catalog, CatalogError, VersionId, copies};
use federation::file::Federation;
use hw_offload::ChunkId;
use std::collections::HashSet;
use std::sync::Arc;
use store::transfer::TransferId;
use store::versions::SnapshotFile;
use transfer_engine::manager::{Kind, State, TransferSpec, Transfers};
use transfer_engine::versions::{Landing, VersionBook, VersionRefusal};
use transfer_proto::wire::Selection;

/// This site's catalog, with the federation file whose site attributes the namespaces'
/// sharing expressions match on.
pub struct CatalogBook {
    /// the catalog
    pub catalog: Arc<Catalog<InStore>>,
    /// the federation
    pub federation: Arc<Federation>,
}

/// A catalog failure as the engine acts on it: what is not known yet here is tried again.
fn refusal(e: CatalogError) -> VersionRefusal {
    match e {
        CatalogError::Refused(reason) => VersionRefusal::Refused(reason),
        CatalogError::NotFound(reason) => VersionRefusal::NotYet(reason),
        other => VersionRefusal::Failed(other.to_string()),
    }
}

impl VersionBook for CatalogBook {
    fn may_hold(&self, version: &[u8; 32], site: &str) -> Result<(), VersionRefusal> {
        copies::may_hold(&self.catalog, &self.federation, &VersionId(*version), site).map_err(refusal)
    }

    fn size(&self, version: &[u8; 32]) -> Result<(u64, u64), VersionRefusal> {
        copies::published_size(&self.catalog, &VersionId(*version)).map_err(refusal)
    }

    fn files(&self, version: &[u8; 32]) -> Result<Vec<SnapshotFile>, VersionRefusal> {
        // A copy missing here will not appear by waiting: refused, not retried.
        copies::files_to_send(&self.catalog, &VersionId(*version)).map_err(|e| match e {
            CatalogError::NotFound(reason) => VersionRefusal::Refused(reason),
            other => refusal(other),
        })
    }

    fn known_chunks(&self, version: &[u8; 32]) -> Result<HashSet<ChunkId>, VersionRefusal> {
        copies::known_chunks(&self.catalog, &VersionId(*version)).map_err(refusal)
    }

    fn land(&self, transfer: TransferId, version: [u8; 32], files: Vec<SnapshotFile>) -> Landing<'_> {
        Box::pin(async move {
            // The home may have withdrawn its share while the data came.
            let site = self.catalog.site().to_owned();
            copies::may_hold(&self.catalog, &self.federation, &VersionId(version), &site).map_err(refusal)?;
            copies::land(&self.catalog, transfer, &VersionId(version), files).await.map_err(refusal)
        })
    }
}

/// The transfer engine as rules use it: copies of versions between any two sites.
pub struct TransferReplicator(pub Arc<Transfers>);

impl Replicator for TransferReplicator {
    fn copy(&self, version: &VersionId, from: &str, to: &str) -> Started<'_> {
        let here = self.0.site();
        let kind = if from == here {
            Kind::Push { to: to.to_owned(), delegated_by: None }
        } else if to == here {
            Kind::Pull { from: from.to_owned() }
        } else {
            Kind::Copy { from: from.to_owned(), to: to.to_owned() }
        };
        let spec = TransferSpec {
            kind,
            source: Selection::default(),
            dest: Selection::default(),
            version: Some(version.0),
            priority: 0,
            rate_limit: None,
        };
        Box::pin(async move { self.0.start(spec).await.map(|status| status.id).map_err(|e| e.to_string()) })
    }

    fn state(&self, id: &str) -> Option<CopyState> {
        let status = self.0.status(id).ok()?;
        Some(match status.state {
            State::Done => CopyState::Done,
            State::Failed | State::Cancelled => {
                CopyState::Failed(status.error.unwrap_or_else(|| status.state.as_str().to_owned()))
            }
            _ => CopyState::Running,
        })
    }
}

//! Dataset versions as a transfer's payload. The catalog knows which versions exist, who
//! may hold them and how a landed one is recorded; the engine knows how chunks move. The
//! daemon joins the two by implementing [`VersionBook`] over its catalog.
//!
//! A version moves as its files: the sender offers them as it offers objects (path,
//! size, ETag, checksums, mtime, chunks), the receiver asks for the chunks it lacks, and
//! once all are in it hands the files to [`VersionBook::land`], which rebuilds the
//! manifest, checks that it hashes to the version's id (a sender cannot pass other files
//! off as the version) and records the version and its replica with the chunks' hold, in
//! one write.

use hw_offload::ChunkId;
use std::collections::HashSet;
use store::transfer::TransferId;
use store::versions::SnapshotFile;

/// What [`VersionBook::land`] returns: the landing, to await.
pub type Landing<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), VersionRefusal>> + Send + 'a>>;

/// Why a version cannot be sent or landed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionRefusal {
    /// the namespace's home does not let that site hold it, or the files are not the
    /// version: trying again will not help
    #[error("{0}")]
    Refused(String),
    /// not known here yet (its publication has not reached this site): tried again later
    #[error("{0}")]
    NotYet(String),
    /// the catalog could not answer or record
    #[error("{0}")]
    Failed(String),
}

/// The catalog, as the transfer engine sees it.
pub trait VersionBook: Send + Sync {
    /// Refuses unless the home of `version`'s namespace lets `site` hold a copy of it.
    fn may_hold(&self, version: &[u8; 32], site: &str) -> Result<(), VersionRefusal>;

    /// The most files and bytes `version`'s publications say it has (files, bytes): what
    /// a sender may offer of it, so that a receiver holds no more than that of its list.
    fn size(&self, version: &[u8; 32]) -> Result<(u64, u64), VersionRefusal>;

    /// The files of `version`, complete here, to send.
    fn files(&self, version: &[u8; 32]) -> Result<Vec<SnapshotFile>, VersionRefusal>;

    /// The chunks of other versions held here that a site sending `version` may be told
    /// are here: those of versions of the same namespace, which it may hold too.
    fn known_chunks(&self, version: &[u8; 32]) -> Result<HashSet<ChunkId>, VersionRefusal>;

    /// Lands `version` from `files`, all of whose chunks `transfer` brought or found here:
    /// checks them against its id, then holds them and records the replica in one write
    /// that also releases the transfer.
    fn land(&self, transfer: TransferId, version: [u8; 32], files: Vec<SnapshotFile>) -> Landing<'_>;
}

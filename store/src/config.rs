//! Store configuration: what the daemon's `[store]` section turns into.

use crate::error::StoreError;
use hw_offload::{ChunkerConfig, Codec};
use std::path::PathBuf;

/// Store settings. Defaults run one site under a local data directory.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Metadata lives in `<data_dir>/meta`; chunks default to `<data_dir>/chunks`.
    pub data_dir: PathBuf,
    /// Where chunk packs go instead of the data dir: any `object_store` URL
    /// (`s3://bucket/prefix`, `file:///path`, `memory://`).
    pub chunk_store_url: Option<String>,
    /// Options for that URL (e.g. `aws_endpoint`, `aws_access_key_id`).
    pub chunk_store_options: Vec<(String, String)>,
    /// Content-defined chunking bounds for new data.
    pub chunker: ChunkerConfig,
    /// Objects up to this size are kept inside the metadata record, not chunked.
    pub inline_max_bytes: u32,
    /// A writer seals its pack object once it holds this many bytes.
    pub pack_target_bytes: u64,
    /// zstd level for chunks (`None` stores everything raw when the codec is zstd).
    pub zstd_level: Option<i32>,
    /// Codec for new chunks: zstd (best ratio), LZ4 (what DPU engines such as
    /// BlueField-3 decompress in hardware) or raw. Every frame records its codec, so
    /// changing this leaves stored chunks readable.
    pub codec: Codec,
    /// Largest object accepted (S3's own limit is 5 TiB).
    pub max_object_bytes: u64,
    /// Chunks fetched ahead of the one being sent on a read.
    pub read_ahead_chunks: usize,
}

impl StoreConfig {
    /// The defaults, rooted at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            chunk_store_url: None,
            chunk_store_options: Vec::new(),
            chunker: ChunkerConfig::default(),
            // One 4 KiB page of value fits RocksDB's blocks well; larger objects chunk.
            inline_max_bytes: 16 << 10,
            // 16 MiB packs: one fsync per 16 MiB ingested, and a petabyte site holds
            // ~6e7 pack files instead of ~1.7e10 chunk files.
            pack_target_bytes: 16 << 20,
            zstd_level: Some(1),
            codec: Codec::Zstd,
            max_object_bytes: 5 << 40,
            read_ahead_chunks: 8,
        }
    }

    /// The step that codes a chunk for storage under these settings, if any.
    pub fn compress_step(&self) -> Option<hw_offload::Step> {
        match (self.codec, self.zstd_level) {
            (Codec::Zstd, Some(level)) => Some(hw_offload::Step::Compress { codec: Codec::Zstd, level }),
            (Codec::Lz4, _) => Some(hw_offload::Step::Compress { codec: Codec::Lz4, level: 0 }),
            _ => None,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), StoreError> {
        self.chunker.validate().map_err(|e| StoreError::Config(e.to_string()))?;
        if self.pack_target_bytes < self.chunker.max_bytes as u64 {
            return Err(StoreError::Config(format!(
                "pack_target_bytes ({}) must be at least chunk max_bytes ({})",
                self.pack_target_bytes, self.chunker.max_bytes
            )));
        }
        if self.read_ahead_chunks == 0 {
            return Err(StoreError::Config("read_ahead_chunks must be at least 1".into()));
        }
        if let Some(level) = self.zstd_level
            && !zstd::compression_level_range().contains(&level)
        {
            return Err(StoreError::Config(format!("zstd_level {level} is outside zstd's range")));
        }
        Ok(())
    }
}

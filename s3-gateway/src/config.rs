//! Gateway limits and addressing.

/// What the gateway accepts. Defaults are S3's own limits.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Region reported to clients (GetBucketLocation, HeadBucket).
    pub region: String,
    /// Base domain for virtual-hosted-style requests (`bucket.<domain>`), port included
    /// as clients send it; `None` serves path-style only.
    pub domain: Option<String>,
    /// Largest single PutObject.
    pub max_object_bytes: u64,
    /// Largest part.
    pub max_part_bytes: u64,
    /// Highest part number.
    pub max_part_number: u32,
    /// Largest listing page.
    pub max_keys: usize,
    /// Longest validity of a presigned URL, seconds.
    pub max_presign_secs: u64,
    /// Largest XML request body (CompleteMultipartUpload with 10,000 parts is ~1 MiB).
    pub xml_max_body_bytes: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            domain: None,
            max_object_bytes: 5 << 30,
            max_part_bytes: 5 << 30,
            max_part_number: 10_000,
            max_keys: 1000,
            max_presign_secs: 7 * 24 * 3600,
            xml_max_body_bytes: 4 << 20,
        }
    }
}

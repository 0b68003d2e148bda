//! The S3 protocol over the store.
//!
//! Not built yet: the S3 gateway issue fills this crate (an `s3s` backend over
//! `store`, split by operation group). Until then it exports nothing and
//! `clusster serve` opens no S3 listener.

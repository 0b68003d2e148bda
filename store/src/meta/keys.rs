//! Key encoders and their decoders. Keys are prefix bytes and big-endian integers so that
//! RocksDB's byte order is the order listings need.

use hw_offload::ChunkId;

/// Upload ids are 16 random bytes, shown to clients as 32 hex digits.
pub const UPLOAD_ID_LEN: usize = 16;

/// `[len(bucket)][bucket][key]`: all of a bucket's objects are contiguous, in key order.
pub fn object_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The prefix every object key of `bucket` starts with.
pub fn bucket_prefix(bucket: &str) -> Vec<u8> {
    debug_assert!(bucket.len() <= u8::MAX as usize, "bucket names are at most 63 bytes");
    let mut k = Vec::with_capacity(1 + bucket.len() + 64);
    k.push(bucket.len() as u8);
    k.extend_from_slice(bucket.as_bytes());
    k
}

/// Decodes [`object_key`] into (bucket, key).
pub fn decode_object_key(raw: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = raw.split_first()?;
    let bucket = rest.get(..len as usize)?;
    let key = &rest[len as usize..];
    Some((std::str::from_utf8(bucket).ok()?, std::str::from_utf8(key).ok()?))
}

/// The key name of a scanned [`object_key`] of the bucket whose prefix is `bucket_prefix`.
pub fn object_name<'a>(raw: &'a [u8], bucket_prefix: &[u8]) -> Result<&'a str, crate::error::StoreError> {
    std::str::from_utf8(&raw[bucket_prefix.len()..])
        .map_err(|e| crate::error::StoreError::CorruptMetadata { kind: "object key", reason: e.to_string() })
}

/// `[len(bucket)][bucket][key]\0[upload id]`: uploads listed by key, then upload id.
/// Keys never contain NUL (the gateway refuses them), so the separator sorts first.
pub fn upload_key(bucket: &str, key: &str, upload: &[u8; UPLOAD_ID_LEN]) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k.extend_from_slice(upload);
    k
}

/// Decodes [`upload_key`] into (bucket, key, upload id).
pub fn decode_upload_key(raw: &[u8]) -> Option<(&str, &str, [u8; UPLOAD_ID_LEN])> {
    let split = raw.len().checked_sub(UPLOAD_ID_LEN + 1)?;
    if raw[split] != 0 {
        return None;
    }
    let (bucket, key) = decode_object_key(&raw[..split])?;
    Some((bucket, key, raw[split + 1..].try_into().ok()?))
}

/// Length of a transfer id.
pub const TRANSFER_ID_LEN: usize = 16;

/// `[transfer id][chunk id]`: the chunks one transfer holds, together.
pub fn transfer_chunk_key(transfer: &[u8; TRANSFER_ID_LEN], chunk: &ChunkId) -> [u8; TRANSFER_ID_LEN + 32] {
    let mut k = [0u8; TRANSFER_ID_LEN + 32];
    k[..TRANSFER_ID_LEN].copy_from_slice(transfer);
    k[TRANSFER_ID_LEN..].copy_from_slice(&chunk.0);
    k
}

/// Decodes [`transfer_chunk_key`].
pub fn decode_transfer_chunk_key(raw: &[u8]) -> Option<([u8; TRANSFER_ID_LEN], ChunkId)> {
    if raw.len() != TRANSFER_ID_LEN + 32 {
        return None;
    }
    Some((raw[..TRANSFER_ID_LEN].try_into().ok()?, ChunkId(raw[TRANSFER_ID_LEN..].try_into().ok()?)))
}

/// `[upload id][part number, u32 BE]`: an upload's parts in part order.
pub fn part_key(upload: &[u8; UPLOAD_ID_LEN], part: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(UPLOAD_ID_LEN + 4);
    k.extend_from_slice(upload);
    k.extend_from_slice(&part.to_be_bytes());
    k
}

/// Decodes [`part_key`].
pub fn decode_part_key(raw: &[u8]) -> Option<([u8; UPLOAD_ID_LEN], u32)> {
    if raw.len() != UPLOAD_ID_LEN + 4 {
        return None;
    }
    Some((raw[..UPLOAD_ID_LEN].try_into().ok()?, u32::from_be_bytes(raw[UPLOAD_ID_LEN..].try_into().ok()?)))
}

/// Chunk-keyed families use the 32 id bytes as the key.
pub fn chunk_key(id: &ChunkId) -> [u8; 32] {
    id.0
}

/// Decodes [`chunk_key`].
pub fn decode_chunk_key(raw: &[u8]) -> Option<ChunkId> {
    Some(ChunkId(raw.try_into().ok()?))
}

/// Pack ids as big-endian u64.
pub fn pack_key(pack: u64) -> [u8; 8] {
    pack.to_be_bytes()
}

/// Decodes [`pack_key`].
pub fn decode_pack_key(raw: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(raw.try_into().ok()?))
}

/// `[len(bucket)][bucket][project]`: a bucket's grants are contiguous.
pub fn grant_key(bucket: &str, project: &str) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(project.as_bytes());
    k
}

/// `[len(bucket)][bucket][chunk id]`: the chunks a bucket's objects use, together.
pub fn bucket_chunk_key(bucket: &str, chunk: &ChunkId) -> Vec<u8> {
    let mut k = bucket_prefix(bucket);
    k.extend_from_slice(&chunk.0);
    k
}

/// The smallest key greater than every key starting with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip_and_sort_by_bucket_then_key() {
        let a = object_key("b1", "a/x");
        assert_eq!(decode_object_key(&a), Some(("b1", "a/x")));
        let mut keys = [
            object_key("b1", "b"),
            object_key("b1", "a/x"),
            object_key("b1", "a"),
            object_key("b10", ""),
            object_key("b1", ""),
        ];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| decode_object_key(k).unwrap()).collect();
        assert_eq!(decoded, [("b1", ""), ("b1", "a"), ("b1", "a/x"), ("b1", "b"), ("b10", "")]);
    }

    #[test]
    fn upload_keys_sort_by_key_then_id() {
        let (i1, i2) = ([1u8; 16], [2u8; 16]);
        let mut keys = [upload_key("b", "a/b", &i1), upload_key("b", "a", &i2), upload_key("b", "a", &i1)];
        keys.sort();
        let decoded: Vec<_> = keys.iter().map(|k| decode_upload_key(k).unwrap()).collect();
        assert_eq!(decoded, [("b", "a", i1), ("b", "a", i2), ("b", "a/b", i1)]);
    }

    #[test]
    fn part_pack_chunk_keys_round_trip_in_numeric_order() {
        let id = [7u8; 16];
        assert!(part_key(&id, 2) < part_key(&id, 10));
        assert_eq!(decode_part_key(&part_key(&id, 10)), Some((id, 10)));
        assert!(pack_key(255) < pack_key(256));
        assert_eq!(decode_pack_key(&pack_key(u64::MAX)), Some(u64::MAX));
        let chunk = ChunkId::of(b"c");
        assert_eq!(decode_chunk_key(&chunk_key(&chunk)), Some(chunk));
        assert_eq!(prefix_successor(b"ab\xff"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"\xff"), None);
    }
}

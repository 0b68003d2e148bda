//! Transfer rates measured between sites, kept so that placement estimates staging time
//! from what links really did, not only from the federation file's link table, and still
//! knows it after a restart.

use crate::Store;
use crate::error::StoreError;
use crate::meta::cf;

/// What was measured from one site to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkRate {
    /// bytes per second on the wire, a moving average (recent transfers weigh more)
    pub bytes_per_sec: f64,
    /// transfers measured
    pub samples: u64,
    /// when the last was, ms since the epoch
    pub updated_ms: i64,
}

/// Weight of the newest transfer in the average.
const NEWEST_WEIGHT: f64 = 0.3;

fn link_key(from: &str, to: &str) -> Vec<u8> {
    [from.as_bytes(), &[0], to.as_bytes()].concat()
}

impl LinkRate {
    fn encode(&self) -> [u8; 24] {
        let mut out = [0; 24];
        out[..8].copy_from_slice(&self.bytes_per_sec.to_le_bytes());
        out[8..16].copy_from_slice(&self.samples.to_le_bytes());
        out[16..].copy_from_slice(&self.updated_ms.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let raw: &[u8; 24] = raw.try_into().ok()?;
        Some(Self {
            bytes_per_sec: f64::from_le_bytes(raw[..8].try_into().ok()?),
            samples: u64::from_le_bytes(raw[8..16].try_into().ok()?),
            updated_ms: i64::from_le_bytes(raw[16..].try_into().ok()?),
        })
    }
}

impl Store {
    /// Records a transfer from `from` to `to` that moved `bytes` on the wire in `secs`.
    pub async fn record_link_rate(&self, from: &str, to: &str, bytes: u64, secs: f64) -> Result<(), StoreError> {
        if secs <= 0.0 || bytes == 0 {
            return Ok(());
        }
        let measured = bytes as f64 / secs;
        let key = link_key(from, to);
        let rate = match self.link_rate(from, to)? {
            Some(old) => LinkRate {
                bytes_per_sec: old.bytes_per_sec * (1.0 - NEWEST_WEIGHT) + measured * NEWEST_WEIGHT,
                samples: old.samples + 1,
                updated_ms: crate::now_ms(),
            },
            None => LinkRate { bytes_per_sec: measured, samples: 1, updated_ms: crate::now_ms() },
        };
        let mut batch = self.meta.batch();
        batch.put_raw(cf::LINK_RATES, &key, &rate.encode());
        self.commit(batch).await
    }

    /// What was measured from `from` to `to`, if anything (a record this build cannot read
    /// counts as nothing).
    pub fn link_rate(&self, from: &str, to: &str) -> Result<Option<LinkRate>, StoreError> {
        Ok(self.meta.get_raw(cf::LINK_RATES, &link_key(from, to))?.and_then(|raw| LinkRate::decode(&raw)))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Store, StoreConfig};

    #[tokio::test]
    async fn rates_average_and_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let offload = hw_offload::Offload::cpu(1);
        let store = Store::open(StoreConfig::new(dir.path()), offload.clone()).await.unwrap();
        assert_eq!(store.link_rate("paris", "julich").unwrap(), None);
        store.record_link_rate("paris", "julich", 100_000_000, 1.0).await.unwrap();
        store.record_link_rate("paris", "julich", 200_000_000, 1.0).await.unwrap();
        store.record_link_rate("paris", "julich", 0, 1.0).await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path()), offload).await.unwrap();
        let rate = store.link_rate("paris", "julich").unwrap().unwrap();
        assert_eq!(rate.samples, 2);
        assert!((rate.bytes_per_sec - 130_000_000.0).abs() < 1.0, "{rate:?}");
        assert_eq!(store.link_rate("julich", "paris").unwrap(), None, "each direction apart");
    }
}

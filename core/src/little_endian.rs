//! Readers of little-endian fields at a byte offset: of the values stored in
//! shared data (buckets, leases, adaptive health, coordination) and of the
//! header maps the host serialises. A short value reads as `None`.

pub fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    b.get(i..i.checked_add(8)?).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)
}

pub fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i.checked_add(4)?).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes)
}

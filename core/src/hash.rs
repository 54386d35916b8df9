//! Hashes. FNV-1a, 64-bit: a stable hash for what must be the same in every
//! instance and version (rule identities, metric keys, counter-service ids);
//! it rules out Rust's randomly seeded `DefaultHasher`, and it is not
//! secret: anyone can compute it.
//!
//! [`Keyed`]: SipHash-1-3 under the instance's [`SlotSecret`], for what a
//! client must not be able to aim: the slot a key lives in and the
//! fingerprint that tells keys apart in it. The secret is drawn once per
//! instance from the host's randomness and kept in shared data
//! (`store::ensure_secret`), so every worker of an instance agrees; other
//! instances have their own, which is fine since slots never leave one.

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a hasher.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(OFFSET)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// Writes a field followed by a separator byte that cannot occur inside
    /// UTF-8 text, so `("ab", "c")` and `("a", "bc")` hash differently.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.write(bytes).write(&[0xff])
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    Fnv::default().write(bytes).finish()
}

/// The instance's secret for slot addressing (all zero in tests and in
/// the operator tools, which have no host to draw one from).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotSecret(pub [u8; 16]);

/// Incremental keyed hasher (SipHash-1-3), with the same field framing as
/// [`Fnv`].
#[derive(Clone, Debug)]
pub struct Keyed(siphasher::sip::SipHasher13);

impl Keyed {
    pub fn new(secret: &SlotSecret) -> Keyed {
        Keyed(siphasher::sip::SipHasher13::new_with_key(&secret.0))
    }

    /// Writes a field followed by a separator byte that cannot occur inside
    /// UTF-8 text, so `("ab", "c")` and `("a", "bc")` hash differently.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        use core::hash::Hasher;
        self.0.write(bytes);
        self.0.write(&[0xff]);
        self
    }

    pub fn finish(&self) -> u64 {
        use core::hash::Hasher;
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn keyed_hashes_depend_on_the_secret() {
        let one = SlotSecret([1; 16]);
        let h = |secret: &SlotSecret, text: &[u8]| Keyed::new(secret).field(text).finish();
        assert_eq!(h(&one, b"tenant-a"), h(&one, b"tenant-a"));
        assert_ne!(h(&one, b"tenant-a"), h(&SlotSecret([2; 16]), b"tenant-a"));
        assert_ne!(h(&one, b"tenant-a"), h(&one, b"tenant-b"));
        let ab_c = Keyed::new(&one).field(b"ab").field(b"c").finish();
        let a_bc = Keyed::new(&one).field(b"a").field(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn fields_are_separated() {
        let ab_c = Fnv::default().field(b"ab").field(b"c").finish();
        let a_bc = Fnv::default().field(b"a").field(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }
}

//! FNV-1a, 64-bit: a stable hash for slot addresses and fingerprints. It must
//! never change between versions or differ between workers, which rules out
//! Rust's randomly seeded `DefaultHasher`.

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
    fn fields_are_separated() {
        let ab_c = Fnv::default().field(b"ab").field(b"c").finish();
        let a_bc = Fnv::default().field(b"a").field(b"bc").finish();
        assert_ne!(ab_c, a_bc);
    }
}

//! Tool-call ids: `call_` followed by 24 ASCII alphanumerics, the shape OpenAI's ids have (and
//! llama-server's `gen_tool_call_id`). They only need to be unique within a conversation and
//! unguessable enough not to collide across requests, so a process-wide counter mixed with a
//! time-based seed through SplitMix64 does; no OS random source is needed (boards may lack one
//! early at boot). Ids for history entries that came without one (Ollama) are derived from the
//! message instead ([`stable_call_id`]), so the same conversation renders to the same prompt every
//! turn and the engine's prompt cache keeps hitting.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Alphanumerics after the `call_` prefix.
pub const ID_CHARS: usize = 24;

/// SplitMix64's output function: a cheap, well-mixed bijection of u64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `call_` + 24 characters drawn from the stream `mix(state + k)`.
fn id_from_state(state: u64) -> String {
    let mut out = String::with_capacity(5 + ID_CHARS);
    out.push_str("call_");
    let mut word = 0u64;
    let mut left = 0;
    let mut k = 0u64;
    for _ in 0..ID_CHARS {
        if left == 0 {
            k += 1;
            word = mix(state.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            // 10 base-62 digits per 64-bit word (62^10 < 2^64).
            left = 10;
        }
        out.push(char::from(ALPHABET[(word % 62) as usize]));
        word /= 62;
        left -= 1;
    }
    out
}

/// A fresh id, different for every call in this process.
pub fn new_call_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // The address of a static differs between runs where ASLR is on: more entropy for free.
        mix(now ^ (&COUNTER as *const AtomicU64 as u64).rotate_left(32))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    id_from_state(mix(seed ^ mix(n)))
}

/// An id that depends only on `material` (FNV-1a 64 of it, then mixed): the same history entry
/// always gets the same id.
pub fn stable_call_id(material: &str) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in material.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    id_from_state(mix(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(id: &str) -> bool {
        id.len() == 5 + ID_CHARS
            && id.starts_with("call_")
            && id[5..].bytes().all(|b| b.is_ascii_alphanumeric())
    }

    #[test]
    fn fresh_ids_are_well_formed_and_distinct() {
        let ids: Vec<String> = (0..1000).map(|_| new_call_id()).collect();
        assert!(ids.iter().all(|i| well_formed(i)));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn stable_ids_depend_on_material_only() {
        let a = stable_call_id("0:1:get_weather");
        assert!(well_formed(&a));
        assert_eq!(a, stable_call_id("0:1:get_weather"));
        assert_ne!(a, stable_call_id("0:2:get_weather"));
    }
}

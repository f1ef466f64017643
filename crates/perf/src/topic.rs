//! Topic patterns and routing keys drawn from a fixed seed, so that every
//! run (and both brokers) see the same binding table and the same keys.
//!
//! Keys have four words, each from 32 per position. A pattern word is the
//! key's word 75 % of the time, `*` 20 % and `#` (ending the pattern) 5 %,
//! so a key matches a small share of 10,000 patterns (a few dozen) and
//! almost every key matches at least one.

const WORDS: u32 = 32;
const DEPTH: usize = 4;

fn word(rng: &mut fastrand::Rng, level: usize) -> String {
    format!("w{level}{}", rng.u32(..WORDS))
}

/// `count` binding patterns.
pub fn patterns(seed: u64, count: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|_| {
            let mut words = Vec::with_capacity(DEPTH);
            for level in 0..DEPTH {
                match rng.u32(..100) {
                    0..=74 => words.push(word(&mut rng, level)),
                    75..=94 => words.push("*".to_owned()),
                    _ => {
                        words.push("#".to_owned());
                        break;
                    }
                }
            }
            words.join(".")
        })
        .collect()
}

/// `count` routing keys, from a seed of their own.
pub fn keys(seed: u64, count: usize) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x6b65_7973);
    (0..count)
        .map(|_| {
            (0..DEPTH)
                .map(|level| word(&mut rng, level))
                .collect::<Vec<_>>()
                .join(".")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_table() {
        assert_eq!(patterns(7, 100), patterns(7, 100));
        assert_eq!(keys(7, 10), keys(7, 10));
        assert_ne!(patterns(7, 100), patterns(8, 100));
        assert!(keys(7, 10).iter().all(|k| k.split('.').count() == DEPTH));
    }
}

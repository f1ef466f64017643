//! Topic matching, as RabbitMQ does it: keys and patterns are words separated
//! by `.`, `*` matches exactly one word, `#` matches zero or more words. Words
//! may be empty (`a..b` has three words), and the empty key has no words, so
//! it matches the patterns `` and `#` only.
//!
//! Routing matches keys against a trie of patterns ([`crate::table`]); the
//! one-pattern matcher here is the definition it is tested against, and
//! what the route explainer ([`crate::explain`]) tests each binding with.

/// Splits a routing key or binding pattern into words.
pub fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether `key` matches `pattern`: the rules above, one pattern at a time.
///
/// Dynamic programming over (pattern word, key word) pairs, so that a
/// pattern full of `#` costs O(pattern × key), never exponential time.
pub(crate) fn matches(pattern: &str, key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(key);
    // reachable[j]: the pattern words consumed so far can match key[..j].
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in &pattern {
        let mut next = vec![false; key.len() + 1];
        match *word {
            "#" => {
                let mut any = false;
                for j in 0..=key.len() {
                    any |= reachable[j];
                    next[j] = any;
                }
            }
            "*" => {
                next[1..].copy_from_slice(&reachable[..key.len()]);
            }
            literal => {
                for j in 0..key.len() {
                    next[j + 1] = reachable[j] && key[j] == literal;
                }
            }
        }
        reachable = next;
    }
    reachable[key.len()]
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.*", "a.b.c", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("#.c", "c", true),
            ("#.c", "a.b.c", true),
            ("#", "", true),
            ("#", "a.b", true),
            ("*", "", false),
            ("", "", true),
            ("", "a", false),
            ("a.#.#.b", "a.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.x.y.c", false),
            ("*.*", "a.", true),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
            ("#.*", "", false),
            ("#.*", "a", true),
            ("*.#.*", "a", false),
            ("*.#.*", "a.b", true),
            ("quick.orange.rabbit", "quick.orange.rabbit", true),
            ("*.orange.*", "quick.orange.fox", true),
            ("lazy.#", "lazy.orange.male.rabbit", true),
            ("*.*.rabbit", "quick.orange.male.rabbit", false),
        ];
        for &(pattern, key, want) in cases {
            assert_eq!(matches(pattern, key), want, "pattern {pattern:?} key {key:?}");
        }
    }

    #[test]
    fn many_hashes_stay_fast() {
        let pattern = vec!["#"; 200].join(".") + ".x";
        let key = vec!["a"; 200].join(".");
        assert!(!matches(&pattern, &key));
    }
}

//! The bindings of one exchange, in binding order and indexed for routing.
//!
//! Routing must not cost a scan of every binding: a direct exchange keeps
//! its bindings in a hash map by routing key, and a topic exchange in a trie
//! of pattern words (as RabbitMQ's `rabbit_exchange_type_topic` keeps its
//! trie in Mnesia), so a publish costs one lookup, or a walk along the words
//! of its key. Fanout and headers exchanges look at every binding anyway.
//!
//! Each binding gets a sequence number when it is added. Matches are
//! returned in that order, which is the order a scan would give: routing
//! results, and the order in which destination exchanges are visited, do not
//! depend on the index.

use std::collections::{HashMap, HashSet};

use amq_protocol::types::FieldTable;

use crate::{headers, topic, Binding, Destination, ExchangeKind};

/// The bindings of one exchange.
#[derive(Clone, Debug)]
pub struct BindingTable {
    /// Every binding, with its sequence number, in binding order.
    list: Vec<(u64, Binding)>,
    next_seq: u64,
    index: Index,
}

/// Two tables are equal when they hold the same bindings in the same order.
impl PartialEq for BindingTable {
    fn eq(&self, other: &Self) -> bool {
        self.list.len() == other.list.len() && self.iter().eq(other.iter())
    }
}

#[derive(Clone, Debug)]
enum Index {
    /// Fanout: every binding matches.
    Fanout,
    /// Headers: every binding's arguments are matched.
    Headers,
    /// Direct: sequence numbers and destinations by routing key.
    Direct(HashMap<String, Vec<(u64, Destination)>>),
    /// Topic: a trie of pattern words.
    Topic(Node),
}

/// A trie node: the bindings whose pattern ends here, and the next words.
#[derive(Clone, Debug, Default)]
struct Node {
    bound: Vec<(u64, Destination)>,
    words: HashMap<Box<str>, Node>,
    star: Option<Box<Node>>,
    hash: Option<Box<Node>>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.bound.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }

    fn child(&self, word: &str) -> Option<&Node> {
        match word {
            "*" => self.star.as_deref(),
            "#" => self.hash.as_deref(),
            word => self.words.get(word),
        }
    }

    fn child_mut(&mut self, word: &str) -> &mut Node {
        match word {
            "*" => self.star.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            word => self.words.entry(word.into()).or_default(),
        }
    }

    /// The node a pattern ends at, if it exists.
    fn find(&self, pattern: &[&str]) -> Option<&Node> {
        pattern.iter().try_fold(self, |node, word| node.child(word))
    }

    /// Removes the binding `seq` from the node `pattern` leads to, and the
    /// nodes that leaves empty. Recursive, but a pattern has at most 256
    /// words (a routing key is a short string).
    fn remove(&mut self, pattern: &[&str], seq: u64) {
        let Some((word, rest)) = pattern.split_first() else {
            self.bound.retain(|(s, _)| *s != seq);
            return;
        };
        match *word {
            "*" | "#" => {
                let slot = if *word == "*" {
                    &mut self.star
                } else {
                    &mut self.hash
                };
                if let Some(child) = slot {
                    child.remove(rest, seq);
                    if child.is_empty() {
                        *slot = None;
                    }
                }
            }
            word => {
                if let Some(child) = self.words.get_mut(word) {
                    child.remove(rest, seq);
                    if child.is_empty() {
                        self.words.remove(word);
                    }
                }
            }
        }
    }

    /// Adds to `out` every binding whose pattern matches `key`. The walk
    /// keeps its own stack of states (a node, the words consumed). `#` is a
    /// loop on its node: a `#` state either stops there or takes one more
    /// word and stays, and `#` states are remembered, so each state is
    /// visited once: O(nodes × words) for any pattern. (Pushing every later
    /// position from each `#` state cost nodes × words² instead: 4 million
    /// set operations per publish for 128 `#` and a key of 256 empty words.)
    fn matches<'a>(&'a self, key: &[&str], out: &mut Vec<(u64, &'a Destination)>) {
        let mut stack: Vec<(&Node, usize, bool)> = vec![(self, 0, false)];
        let mut seen: HashSet<(*const Node, usize)> = HashSet::new();
        let mut enter_hash = |stack: &mut Vec<(&'a Node, usize, bool)>, hash: &'a Node, at: usize| {
            if seen.insert((hash as *const Node, at)) {
                stack.push((hash, at, true));
            }
        };
        while let Some((node, at, is_hash)) = stack.pop() {
            if at == key.len() {
                out.extend(node.bound.iter().map(|(seq, d)| (*seq, d)));
            }
            if let Some(hash) = node.hash.as_deref() {
                // `#` takes zero words...
                enter_hash(&mut stack, hash, at);
            }
            if is_hash && at < key.len() {
                // ...or one more, and stays.
                enter_hash(&mut stack, node, at + 1);
            }
            if let Some(word) = key.get(at) {
                if let Some(child) = node.words.get(*word) {
                    stack.push((child, at + 1, false));
                }
                if let Some(star) = node.star.as_deref() {
                    stack.push((star, at + 1, false));
                }
            }
        }
    }
}

impl BindingTable {
    /// An empty table for an exchange of `kind`.
    pub fn new(kind: ExchangeKind) -> Self {
        let index = match kind {
            ExchangeKind::Direct => Index::Direct(HashMap::new()),
            ExchangeKind::Topic => Index::Topic(Node::default()),
            ExchangeKind::Fanout => Index::Fanout,
            ExchangeKind::Headers => Index::Headers,
        };
        Self {
            list: Vec::new(),
            next_seq: 0,
            index,
        }
    }

    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The bindings, in binding order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.list.iter().map(|(_, b)| b)
    }

    /// Whether an equal binding (destination, key and arguments) exists.
    pub fn contains(&self, binding: &Binding) -> bool {
        let candidates: Vec<u64> = match &self.index {
            Index::Fanout | Index::Headers => return self.iter().any(|b| b == binding),
            Index::Direct(by_key) => by_key
                .get(&binding.routing_key)
                .into_iter()
                .flatten()
                .filter(|(_, d)| *d == binding.destination)
                .map(|(seq, _)| *seq)
                .collect(),
            Index::Topic(root) => root
                .find(&topic::words(&binding.routing_key))
                .into_iter()
                .flat_map(|node| &node.bound)
                .filter(|(_, d)| *d == binding.destination)
                .map(|(seq, _)| *seq)
                .collect(),
        };
        candidates.into_iter().any(|seq| self.get(seq) == Some(binding))
    }

    fn get(&self, seq: u64) -> Option<&Binding> {
        let at = self.list.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        Some(&self.list[at].1)
    }

    /// Adds a binding (the caller has checked it is not there already).
    pub fn push(&mut self, binding: Binding) {
        let seq = self.next_seq;
        self.next_seq += 1;
        match &mut self.index {
            Index::Fanout | Index::Headers => {}
            Index::Direct(by_key) => by_key
                .entry(binding.routing_key.clone())
                .or_default()
                .push((seq, binding.destination.clone())),
            Index::Topic(root) => {
                let node = topic::words(&binding.routing_key)
                    .into_iter()
                    .fold(root, |node, word| node.child_mut(word));
                node.bound.push((seq, binding.destination.clone()));
            }
        }
        self.list.push((seq, binding));
    }

    /// Keeps only the bindings for which `keep` holds; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&Binding) -> bool) -> usize {
        let mut removed = Vec::new();
        self.list.retain(|(seq, b)| {
            let kept = keep(b);
            if !kept {
                removed.push((*seq, b.routing_key.clone()));
            }
            kept
        });
        for (seq, key) in &removed {
            match &mut self.index {
                Index::Fanout | Index::Headers => {}
                Index::Direct(by_key) => {
                    if let Some(entries) = by_key.get_mut(key) {
                        entries.retain(|(s, _)| s != seq);
                        if entries.is_empty() {
                            by_key.remove(key);
                        }
                    }
                }
                Index::Topic(root) => root.remove(&topic::words(key), *seq),
            }
        }
        removed.len()
    }

    /// Adds to `out` the destinations of the bindings a message with
    /// `routing_key` and `headers` matches, in binding order.
    pub fn matching<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        match &self.index {
            Index::Direct(by_key) => {
                if let Some(entries) = by_key.get(routing_key) {
                    out.extend(entries.iter().map(|(_, d)| d));
                }
            }
            Index::Topic(root) => {
                let mut hits = Vec::new();
                root.matches(&topic::words(routing_key), &mut hits);
                hits.sort_unstable_by_key(|(seq, _)| *seq);
                out.extend(hits.into_iter().map(|(_, d)| d));
            }
            Index::Fanout => out.extend(self.iter().map(|b| &b.destination)),
            Index::Headers => out.extend(
                self.iter()
                    .filter(|b| headers::matches(&b.arguments, headers))
                    .map(|b| &b.destination),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(queue: &str, key: &str) -> Binding {
        Binding {
            destination: Destination::Queue(queue.into()),
            routing_key: key.to_owned(),
            arguments: FieldTable::default(),
        }
    }

    fn routed<'a>(table: &'a BindingTable, key: &str) -> Vec<&'a Destination> {
        let mut out = Vec::new();
        table.matching(key, None, &mut out);
        out
    }

    /// A small deterministic generator: the tests need no seeded crate.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }

        fn words(&mut self, wild: bool) -> String {
            let len = self.below(5);
            (0..len)
                .map(|_| match (wild, self.below(10)) {
                    (true, 0 | 1) => "*".to_owned(),
                    (true, 2) => "#".to_owned(),
                    (_, 3) => String::new(),
                    (_, n) => format!("w{}", n % 3),
                })
                .collect::<Vec<_>>()
                .join(".")
        }
    }

    #[test]
    fn the_topic_trie_agrees_with_the_matcher() {
        let mut rng = Lcg(42);
        let patterns: Vec<String> = (0..400).map(|_| rng.words(true)).collect();
        let mut table = BindingTable::new(ExchangeKind::Topic);
        for (i, pattern) in patterns.iter().enumerate() {
            table.push(binding(&format!("q{i}"), pattern));
        }
        for _ in 0..400 {
            let key = rng.words(false);
            let want: Vec<Destination> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| topic::matches(p, &key))
                .map(|(i, _)| Destination::Queue(format!("q{i}").as_str().into()))
                .collect();
            let got: Vec<Destination> = routed(&table, &key).into_iter().cloned().collect();
            assert_eq!(got, want, "key {key:?}");
        }
    }

    #[test]
    fn removed_bindings_leave_the_index_and_empty_nodes_go() {
        let mut table = BindingTable::new(ExchangeKind::Topic);
        table.push(binding("a", "x.*.#"));
        table.push(binding("b", "x.*.#"));
        table.push(binding("c", "#"));
        assert!(table.contains(&binding("a", "x.*.#")));
        assert!(!table.contains(&binding("c", "x.*.#")));
        assert_eq!(routed(&table, "x.y.z").len(), 3);
        assert_eq!(
            table.retain(|b| b.destination != Destination::Queue("a".into())),
            1
        );
        assert_eq!(
            routed(&table, "x.y.z"),
            [&Destination::Queue("b".into()), &Destination::Queue("c".into())]
        );
        table.retain(|_| false);
        assert!(table.is_empty());
        let Index::Topic(root) = &table.index else {
            unreachable!()
        };
        assert!(root.is_empty(), "{root:?}");
    }

    #[test]
    fn the_direct_index_follows_binds_and_unbinds() {
        let mut table = BindingTable::new(ExchangeKind::Direct);
        for (queue, key) in [("a", "k"), ("b", "k"), ("a", "j")] {
            table.push(binding(queue, key));
        }
        assert_eq!(routed(&table, "k").len(), 2);
        assert!(table.contains(&binding("b", "k")));
        table.retain(|b| b.routing_key != "k");
        assert!(routed(&table, "k").is_empty());
        assert!(!table.contains(&binding("b", "k")));
        assert_eq!(routed(&table, "j"), [&Destination::Queue("a".into())]);
    }

    #[test]
    fn many_hashes_stay_fast_in_the_trie() {
        let mut table = BindingTable::new(ExchangeKind::Topic);
        table.push(binding("q", &(vec!["#"; 200].join(".") + ".x")));
        assert!(routed(&table, &vec!["a"; 200].join(".")).is_empty());
        assert_eq!(routed(&table, &(vec!["a"; 200].join(".") + ".x")).len(), 1);
        // The longest key a peer can send, as empty words: 255.
        assert_eq!(routed(&table, &(".".repeat(253) + "x")).len(), 1);
        assert!(routed(&table, &".".repeat(254)).is_empty());
    }
}

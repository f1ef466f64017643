//! The binding table of one virtual host and the routing walk over it.

use std::collections::{HashMap, HashSet};

use amq_protocol::types::FieldTable;

use crate::exchange::string_arg;
use crate::{headers, Binding, Destination, Exchange, ExchangeKind, ExchangeName, QueueName, RouterError};

/// Every exchange of a virtual host, with its bindings.
#[derive(Clone, Debug)]
pub struct Router {
    exchanges: HashMap<ExchangeName, Exchange>,
    /// For each destination, the exchanges with bindings to it and how many:
    /// deleting a queue or an exchange finds the bindings to it here instead
    /// of scanning every exchange (which made a chain of auto-delete
    /// exchanges quadratic to delete).
    sources: HashMap<Destination, HashMap<ExchangeName, usize>>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with the exchanges the spec requires every virtual host to
    /// have: the default exchange and `amq.direct`, `amq.fanout`, `amq.topic`,
    /// `amq.headers`, `amq.match`, all durable.
    pub fn new() -> Self {
        let mut router = Self {
            exchanges: HashMap::new(),
            sources: HashMap::new(),
        };
        for (name, kind) in [
            ("", ExchangeKind::Direct),
            ("amq.direct", ExchangeKind::Direct),
            ("amq.fanout", ExchangeKind::Fanout),
            ("amq.topic", ExchangeKind::Topic),
            ("amq.headers", ExchangeKind::Headers),
            ("amq.match", ExchangeKind::Headers),
        ] {
            let name = ExchangeName::from(name);
            let exchange = Exchange::new(name.clone(), kind, true, false, false, FieldTable::default());
            router.exchanges.insert(name, exchange);
        }
        router
    }

    /// The exchange with this name.
    pub fn exchanges(&self) -> impl Iterator<Item = &Exchange> {
        self.exchanges.values()
    }

    /// The exchange called `name`.
    pub fn exchange(&self, name: &str) -> Option<&Exchange> {
        self.exchanges.get(name)
    }

    /// Declares an exchange. Returns `true` if it was created, `false` if an
    /// equivalent one existed; a non-equivalent one is an error.
    pub fn declare(&mut self, exchange: Exchange) -> Result<bool, RouterError> {
        if exchange.name.as_str().is_empty() {
            return Err(RouterError::DefaultExchange);
        }
        match self.exchanges.get(exchange.name.as_str()) {
            Some(existing) => existing.check_equivalent(&exchange).map(|_| false),
            None => {
                self.exchanges.insert(exchange.name.clone(), exchange);
                Ok(true)
            }
        }
    }

    /// Deletes an exchange, its bindings, and the bindings to it. Returns
    /// every exchange removed: this one first, then those deleted in turn
    /// (auto-delete sources left unbound).
    pub fn delete(&mut self, name: &str, if_unused: bool) -> Result<Vec<Exchange>, RouterError> {
        if name.is_empty() {
            return Err(RouterError::DefaultExchange);
        }
        let exchange = self
            .exchanges
            .get(name)
            .ok_or_else(|| RouterError::ExchangeNotFound(name.into()))?;
        if if_unused && !exchange.bindings.is_empty() {
            return Err(RouterError::InUse(exchange.name.clone()));
        }
        let name = exchange.name.clone();
        Ok(self.remove_exchange(&name))
    }

    /// Adds a binding. The source (and a destination exchange) must exist;
    /// a queue destination is checked by the caller, which owns the queues.
    pub fn bind(
        &mut self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), RouterError> {
        let exchange = self.binding_source(source, &destination)?;
        if exchange.kind == ExchangeKind::Headers {
            headers::x_match(&arguments)?;
        }
        let binding = Binding {
            destination: destination.clone(),
            routing_key: routing_key.to_owned(),
            arguments,
        };
        if !exchange.bindings.contains(&binding) {
            exchange.bindings.push(binding);
            let source = exchange.name.clone();
            *self
                .sources
                .entry(destination)
                .or_default()
                .entry(source)
                .or_default() += 1;
        }
        Ok(())
    }

    /// The source exchange of a bind or unbind, once both ends are known to
    /// exist (a queue destination is the caller's to check).
    fn binding_source(
        &mut self,
        source: &str,
        destination: &Destination,
    ) -> Result<&mut Exchange, RouterError> {
        if let Destination::Exchange(d) = destination {
            if !self.exchanges.contains_key(d.as_str()) {
                return Err(RouterError::ExchangeNotFound(d.clone()));
            }
        }
        if source.is_empty() {
            return Err(RouterError::DefaultExchange);
        }
        self.exchanges
            .get_mut(source)
            .ok_or_else(|| RouterError::ExchangeNotFound(source.into()))
    }

    /// Removes a binding; removing one that does not exist is not an error
    /// (RabbitMQ answers unbind-ok). Returns the exchanges it auto-deleted.
    pub fn unbind(
        &mut self,
        source: &str,
        destination: &Destination,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<Vec<Exchange>, RouterError> {
        let exchange = self.binding_source(source, destination)?;
        let before = exchange.bindings.len();
        exchange.bindings.retain(|b| {
            !(&b.destination == destination && b.routing_key == routing_key && &b.arguments == arguments)
        });
        if exchange.bindings.len() == before {
            return Ok(Vec::new());
        }
        let (name, emptied) = (
            exchange.name.clone(),
            exchange.bindings.is_empty() && exchange.auto_delete,
        );
        self.forget_source(destination, &name, 1);
        if emptied {
            return Ok(self.remove_exchange(&name));
        }
        Ok(Vec::new())
    }

    /// Removes every binding to a queue that is being deleted. Returns the
    /// auto-delete exchanges this left without bindings, which are deleted too.
    pub fn unbind_queue(&mut self, queue: &QueueName) -> Vec<Exchange> {
        self.remove_bindings_to(&Destination::Queue(queue.clone()))
    }

    /// Removes an exchange and the bindings to it; returns it, then the
    /// exchanges that removal deleted in turn. Iterative: a chain of
    /// auto-delete exchanges however long cannot overflow the stack.
    fn remove_exchange(&mut self, name: &ExchangeName) -> Vec<Exchange> {
        let mut removed = Vec::new();
        let mut pending = vec![name.clone()];
        while let Some(name) = pending.pop() {
            let Some(exchange) = self.exchanges.remove(name.as_str()) else {
                continue;
            };
            for binding in exchange.bindings.iter() {
                self.forget_source(&binding.destination, &name, 1);
            }
            removed.push(exchange);
            let emptied = self.unbind_all_to(&Destination::Exchange(name));
            // Deleted in the order they were emptied.
            pending.extend(emptied.into_iter().rev());
        }
        removed
    }

    /// Removes every binding to `destination`, and the auto-delete exchanges
    /// that leaves without bindings.
    fn remove_bindings_to(&mut self, destination: &Destination) -> Vec<Exchange> {
        let emptied = self.unbind_all_to(destination);
        emptied
            .iter()
            .flat_map(|name| self.remove_exchange(name))
            .collect()
    }

    /// Removes every binding to `destination`; returns the auto-delete
    /// exchanges left without bindings (not yet deleted).
    fn unbind_all_to(&mut self, destination: &Destination) -> Vec<ExchangeName> {
        let mut emptied = Vec::new();
        let mut sources: Vec<ExchangeName> = self
            .sources
            .remove(destination)
            .unwrap_or_default()
            .into_keys()
            .collect();
        // A deterministic order for what is deleted in turn.
        sources.sort_unstable();
        for source in sources {
            let Some(exchange) = self.exchanges.get_mut(source.as_str()) else {
                continue;
            };
            exchange.bindings.retain(|b| &b.destination != destination);
            if exchange.auto_delete && exchange.bindings.is_empty() {
                emptied.push(source);
            }
        }
        emptied
    }

    /// `n` bindings from `source` to `destination` are gone.
    fn forget_source(&mut self, destination: &Destination, source: &ExchangeName, n: usize) {
        let Some(sources) = self.sources.get_mut(destination) else {
            return;
        };
        if let Some(count) = sources.get_mut(source) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                sources.remove(source);
            }
        }
        if sources.is_empty() {
            self.sources.remove(destination);
        }
    }

    /// The queues a message published to `exchange` with `routing_key` and
    /// `headers` goes to, each once. Follows exchange-to-exchange bindings and
    /// alternate exchanges, visiting each exchange at most once so that
    /// binding loops end. The default exchange routes to the queue named by
    /// the routing key; the caller checks that such a queue exists.
    pub fn route<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        headers: Option<&FieldTable>,
    ) -> Vec<&'a str> {
        self.route_detail(exchange, routing_key, headers).queues
    }

    /// [`Router::route`], saying also whether the result depended on the
    /// message's headers (a headers exchange was on the way): if not, it
    /// holds for every message with this exchange and key, and may be
    /// cached until the bindings change.
    pub fn route_detail<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        headers: Option<&FieldTable>,
    ) -> Routing<'a> {
        let mut used_headers = false;
        let mut queues = Vec::new();
        let mut delayed = Vec::new();
        // Queues already in `queues`, and exchanges already visited.
        let mut chosen = Seen::default();
        let mut visited = Seen::default();
        // Exchanges still to visit, on a stack of our own rather than the
        // thread's: a chain of exchange-to-exchange bindings however long
        // cannot overflow it.
        let mut edges = Vec::new();
        // Each with the exchange it was reached from, and whether as its
        // alternate.
        let mut pending: Vec<(&str, Option<(&ExchangeName, bool)>)> = vec![(exchange, None)];
        let mut hits = Vec::new();
        while let Some((name, from)) = pending.pop() {
            let Some(exchange) = self.exchanges.get(name) else {
                continue;
            };
            if !visited.insert(exchange.name.as_str()) {
                continue;
            }
            if let Some((source, alternate)) = from {
                edges.push(Edge {
                    source: source.clone(),
                    destination: Destination::Exchange(exchange.name.clone()),
                    alternate,
                });
            }
            if name.is_empty() {
                if chosen.insert(routing_key) {
                    queues.push(routing_key);
                }
                continue;
            }
            hits.clear();
            used_headers |= exchange.kind == ExchangeKind::Headers || exchange.delayed;
            if exchange.delayed && crate::delayed::delay_of(headers).is_some() {
                delayed.push(exchange.name.as_str());
                continue;
            }
            exchange.bindings.matching(routing_key, headers, &mut hits);
            let first = pending.len();
            let source = &exchange.name;
            for destination in &hits {
                match destination {
                    Destination::Queue(q) => {
                        if chosen.insert(q.as_str()) {
                            queues.push(q.as_str());
                            edges.push(Edge {
                                source: source.clone(),
                                destination: (*destination).clone(),
                                alternate: false,
                            });
                        }
                    }
                    Destination::Exchange(x) => pending.push((x.as_str(), Some((source, false)))),
                }
            }
            // Visit destination exchanges in binding order.
            pending[first..].reverse();
            // An alternate exchange takes what this exchange's own bindings did not.
            if hits.is_empty() {
                if let Some(alternate) = string_arg(&exchange.arguments, "alternate-exchange") {
                    pending.push((alternate, Some((source, true))));
                }
            }
        }
        Routing {
            edges,
            queues,
            delayed,
            used_headers,
        }
    }
}

/// A step a message took: from an exchange to a queue it was first routed
/// to through one of the exchange's bindings, or to an exchange it first
/// reached through a binding or as the exchange's alternate. The default
/// exchange's implicit bindings are not steps. The names are shared (a
/// clone is a reference count), so that counting steps allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// The exchange the message left.
    pub source: ExchangeName,
    /// The queue or exchange it reached.
    pub destination: Destination,
    /// The source's alternate exchange (none of its bindings matched).
    pub alternate: bool,
}

/// Where a message goes, and whether that depended on its headers.
#[derive(Debug)]
pub struct Routing<'a> {
    /// The steps it took ([`Edge`]), each once.
    pub edges: Vec<Edge>,
    /// The queues, each once.
    pub queues: Vec<&'a str>,
    /// The delayed exchanges that held the message for its `x-delay`
    /// ([`crate::delayed`]), each once.
    pub delayed: Vec<&'a str>,
    /// Whether a headers exchange (or a delayed one) was visited.
    pub used_headers: bool,
}

/// A set of names that stays a vector while small: a publish usually visits
/// one exchange and picks a few queues, where hashing costs more than a
/// scan; a fanout to thousands of queues gets a hash set, so that it costs
/// one lookup per queue rather than a scan of all those chosen so far.
#[derive(Default)]
struct Seen<'a> {
    few: Vec<&'a str>,
    many: Option<HashSet<&'a str>>,
}

impl<'a> Seen<'a> {
    /// Adds `name`; false if it was there already.
    fn insert(&mut self, name: &'a str) -> bool {
        const FEW: usize = 32;
        if let Some(many) = &mut self.many {
            return many.insert(name);
        }
        if self.few.contains(&name) {
            return false;
        }
        self.few.push(name);
        if self.few.len() > FEW {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    fn exchange(name: &str, kind: ExchangeKind) -> Exchange {
        Exchange::new(name.into(), kind, false, false, false, FieldTable::default())
    }

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    fn names(v: Vec<&str>) -> Vec<String> {
        v.into_iter().map(str::to_owned).collect()
    }

    #[test]
    fn predeclared_exchanges_exist() {
        let r = Router::new();
        for n in [
            "",
            "amq.direct",
            "amq.fanout",
            "amq.topic",
            "amq.headers",
            "amq.match",
        ] {
            assert!(r.exchange(n).is_some(), "{n}");
        }
        assert_eq!(names(r.route("", "work", None)), ["work"]);
    }

    #[test]
    fn direct_fanout_topic_table() {
        let mut r = Router::new();
        r.declare(exchange("d", ExchangeKind::Direct)).unwrap();
        r.declare(exchange("f", ExchangeKind::Fanout)).unwrap();
        r.declare(exchange("t", ExchangeKind::Topic)).unwrap();
        r.bind("d", q("errors"), "error", FieldTable::default()).unwrap();
        r.bind("d", q("all"), "error", FieldTable::default()).unwrap();
        r.bind("d", q("all"), "info", FieldTable::default()).unwrap();
        r.bind("f", q("a"), "", FieldTable::default()).unwrap();
        r.bind("f", q("b"), "ignored", FieldTable::default()).unwrap();
        r.bind("t", q("orange"), "*.orange.*", FieldTable::default())
            .unwrap();
        r.bind("t", q("rabbit"), "*.*.rabbit", FieldTable::default())
            .unwrap();
        r.bind("t", q("rabbit"), "lazy.#", FieldTable::default()).unwrap();
        let cases: &[(&str, &str, &[&str])] = &[
            ("d", "error", &["errors", "all"]),
            ("d", "info", &["all"]),
            ("d", "debug", &[]),
            ("f", "anything", &["a", "b"]),
            ("t", "quick.orange.rabbit", &["orange", "rabbit"]),
            ("t", "lazy.orange.elephant", &["orange", "rabbit"]),
            ("t", "lazy.brown.fox", &["rabbit"]),
            ("t", "quick.brown.fox", &[]),
            ("missing", "x", &[]),
        ];
        for (x, key, want) in cases {
            assert_eq!(names(r.route(x, key, None)), *want, "{x} {key}");
        }
    }

    #[test]
    fn exchange_to_exchange_with_a_loop_terminates_and_dedups() {
        let mut r = Router::new();
        r.declare(exchange("a", ExchangeKind::Fanout)).unwrap();
        r.declare(exchange("b", ExchangeKind::Fanout)).unwrap();
        r.bind("a", Destination::Exchange("b".into()), "", FieldTable::default())
            .unwrap();
        r.bind("b", Destination::Exchange("a".into()), "", FieldTable::default())
            .unwrap();
        r.bind("a", q("q"), "", FieldTable::default()).unwrap();
        r.bind("b", q("q"), "", FieldTable::default()).unwrap();
        assert_eq!(names(r.route("a", "", None)), ["q"]);
    }

    #[test]
    fn alternate_exchange_takes_unrouted_messages() {
        let mut r = Router::new();
        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), AMQPValue::LongString("ae".into()));
        r.declare(Exchange::new(
            "main".into(),
            ExchangeKind::Direct,
            false,
            false,
            false,
            args,
        ))
        .unwrap();
        r.declare(exchange("ae", ExchangeKind::Fanout)).unwrap();
        r.bind("main", q("routed"), "k", FieldTable::default()).unwrap();
        r.bind("ae", q("unrouted"), "", FieldTable::default()).unwrap();
        assert_eq!(names(r.route("main", "k", None)), ["routed"]);
        assert_eq!(names(r.route("main", "other", None)), ["unrouted"]);
    }

    #[test]
    fn redeclare_must_be_equivalent() {
        let mut r = Router::new();
        assert!(r.declare(exchange("x", ExchangeKind::Direct)).unwrap());
        assert!(!r.declare(exchange("x", ExchangeKind::Direct)).unwrap());
        let err = r.declare(exchange("x", ExchangeKind::Topic)).unwrap_err();
        assert!(matches!(err, RouterError::Inequivalent { field: "type", .. }));
        let mut durable = exchange("x", ExchangeKind::Direct);
        durable.durable = true;
        assert!(matches!(
            r.declare(durable).unwrap_err(),
            RouterError::Inequivalent { field: "durable", .. }
        ));
        assert_eq!(
            r.declare(exchange("", ExchangeKind::Direct)),
            Err(RouterError::DefaultExchange)
        );
    }

    #[test]
    fn delete_if_unused_and_auto_delete() {
        let mut r = Router::new();
        r.declare(exchange("x", ExchangeKind::Direct)).unwrap();
        r.bind("x", q("q"), "k", FieldTable::default()).unwrap();
        assert!(matches!(r.delete("x", true), Err(RouterError::InUse(_))));
        r.delete("x", false).unwrap();
        assert!(matches!(
            r.delete("x", false),
            Err(RouterError::ExchangeNotFound(_))
        ));

        let mut auto = exchange("auto", ExchangeKind::Fanout);
        auto.auto_delete = true;
        r.declare(auto).unwrap();
        r.bind("auto", q("q1"), "", FieldTable::default()).unwrap();
        r.bind("auto", q("q2"), "", FieldTable::default()).unwrap();
        assert!(r.unbind_queue(&"q1".into()).is_empty());
        let deleted: Vec<ExchangeName> = r.unbind_queue(&"q2".into()).into_iter().map(|x| x.name).collect();
        assert_eq!(deleted, vec![ExchangeName::from("auto")]);
        assert!(r.exchange("auto").is_none());
    }

    #[test]
    fn headers_bindings_validate_x_match() {
        let mut r = Router::new();
        let mut args = FieldTable::default();
        args.insert("x-match".into(), AMQPValue::LongString("most".into()));
        assert!(matches!(
            r.bind("amq.headers", q("q"), "", args),
            Err(RouterError::InvalidArgument(_))
        ));
        let mut args = FieldTable::default();
        args.insert("kind".into(), AMQPValue::LongString("pdf".into()));
        r.bind("amq.headers", q("q"), "", args.clone()).unwrap();
        assert_eq!(names(r.route("amq.headers", "", Some(&args))), ["q"]);
        assert!(r.route("amq.headers", "", None).is_empty());
    }

    /// Runs `f` on a thread with a 256 KiB stack: deep recursion would
    /// overflow it (and abort the test process).
    fn on_small_stack(f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    /// x0 → x1 → … → x{n-1} → queue "end", fanout all the way.
    fn chain(n: usize, auto_delete: bool) -> Router {
        let mut r = Router::new();
        for i in 0..n {
            let x = Exchange::new(
                format!("x{i}").into(),
                ExchangeKind::Fanout,
                false,
                auto_delete,
                false,
                FieldTable::default(),
            );
            r.declare(x).unwrap();
        }
        for i in 0..n - 1 {
            let next = Destination::Exchange(format!("x{}", i + 1).into());
            r.bind(&format!("x{i}"), next, "", FieldTable::default()).unwrap();
        }
        r.bind(&format!("x{}", n - 1), q("end"), "", FieldTable::default())
            .unwrap();
        r
    }

    #[test]
    fn long_exchange_chains_route_without_recursion() {
        on_small_stack(|| {
            let r = chain(100_000, false);
            assert_eq!(r.route("x0", "k", None), ["end"]);
        });
    }

    #[test]
    fn long_auto_delete_cascades_run_without_recursion() {
        on_small_stack(|| {
            let mut r = chain(100_000, true);
            let before = r.exchanges.len();
            // The queue goes: x99999 is left unbound, which empties x99998, …
            // (linear: the bindings to each come from the index, not a scan).
            let removed = r.unbind_queue(&QueueName::from("end"));
            assert_eq!(removed.len(), 100_000);
            assert_eq!(removed[0].name.as_str(), "x99999");
            assert_eq!(r.exchanges.len(), before - 100_000);
            assert!(r.sources.is_empty(), "the index is emptied with the bindings");
        });
    }

    #[test]
    fn a_wide_fanout_gives_each_queue_one_copy() {
        let mut r = Router::new();
        for name in ["a", "b"] {
            r.declare(exchange(name, ExchangeKind::Fanout)).unwrap();
        }
        r.bind("a", Destination::Exchange("b".into()), "", FieldTable::default())
            .unwrap();
        for i in 0..50 {
            for source in ["a", "b"] {
                r.bind(source, q(&format!("q{i}")), "", FieldTable::default())
                    .unwrap();
            }
        }
        let mut routed = r.route("a", "", None);
        assert_eq!(routed.len(), 50);
        routed.sort();
        routed.dedup();
        assert_eq!(routed.len(), 50);
    }
}

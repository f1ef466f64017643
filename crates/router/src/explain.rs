//! Where would a message go, and why: the routing walk of
//! [`Router::route_detail`] again, recording each exchange visited, how it
//! was reached (published to, through an exchange-to-exchange binding, or
//! as an alternate exchange), and which of its bindings matched.
//!
//! For operators (the management API's and `warren ctl`'s route
//! explainer), never on the publish path: each binding is tested on its
//! own with the exchange type's rule, not through the routing index, so
//! the explanation is also a check of the index (the tests compare both).

use amq_protocol::types::FieldTable;

use crate::{headers, topic, Binding, Destination, ExchangeKind, Router};

/// How an exchange came to be visited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reached {
    /// The message was published to it.
    Published,
    /// A binding of another exchange matched (an exchange-to-exchange
    /// binding), with this key.
    Binding {
        /// The source exchange.
        from: String,
        /// The binding's key.
        routing_key: String,
    },
    /// Another exchange's bindings all missed, and it names this one as its
    /// `alternate-exchange`.
    Alternate {
        /// The exchange whose alternate this is.
        from: String,
    },
}

/// One exchange of the walk.
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    /// Its name (empty for the default exchange).
    pub exchange: String,
    /// Its type, as declared (`x-delayed-message` for a delayed one).
    pub kind: String,
    /// How the walk got here.
    pub reached: Reached,
    /// Its bindings the message matched, in binding order.
    pub matched: Vec<Binding>,
    /// How many of its bindings it did not match.
    pub missed: usize,
    /// A delayed exchange holds the message for its `x-delay` first; the
    /// walk stops here, and goes on when it is due.
    pub held: bool,
    /// Visited before on this walk (a loop of bindings): nothing more.
    pub again: bool,
}

/// A queue the message reaches, and the exchange and binding that send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The queue.
    pub queue: String,
    /// The exchange whose binding matched first.
    pub exchange: String,
    /// That binding's key (for the default exchange, the queue's name).
    pub routing_key: String,
}

/// What [`Router::explain`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// Every exchange visited, in the order of the walk.
    pub hops: Vec<Hop>,
    /// The queues reached, each once, in routing order.
    pub queues: Vec<Arrival>,
}

/// Whether `binding` of an exchange of type `kind` takes a message with this
/// key and these headers: the exchange type's rule.
fn takes(kind: ExchangeKind, binding: &Binding, routing_key: &str, headers: Option<&FieldTable>) -> bool {
    match kind {
        ExchangeKind::Direct => binding.routing_key == routing_key,
        ExchangeKind::Fanout => true,
        ExchangeKind::Topic => topic::matches(&binding.routing_key, routing_key),
        ExchangeKind::Headers => headers::matches(&binding.arguments, headers),
    }
}

impl Router {
    /// Explains where a message published to `exchange` with this key and
    /// headers goes; None if there is no such exchange.
    pub fn explain(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> Option<Explanation> {
        self.exchange(exchange)?;
        let mut out = Explanation::default();
        let mut visited: Vec<&str> = Vec::new();
        // The same order as the routing walk: a stack, destinations pushed
        // in reverse so that they are visited in binding order.
        let mut pending = vec![(exchange, Reached::Published)];
        while let Some((name, reached)) = pending.pop() {
            let Some(x) = self.exchange(name) else {
                continue;
            };
            let mut hop = Hop {
                exchange: name.to_owned(),
                kind: x.type_name(),
                reached,
                matched: Vec::new(),
                missed: 0,
                held: false,
                again: visited.contains(&name),
            };
            if hop.again {
                out.hops.push(hop);
                continue;
            }
            visited.push(name);
            let mut matched: Vec<&Binding> = Vec::new();
            if name.is_empty() {
                // The default exchange: an implicit binding to every queue
                // by its name (the server knows whether it exists).
                hop.matched.push(Binding {
                    destination: Destination::Queue(routing_key.into()),
                    routing_key: routing_key.to_owned(),
                    arguments: FieldTable::default(),
                });
                if !out.queues.iter().any(|a| a.queue == routing_key) {
                    out.queues.push(Arrival {
                        queue: routing_key.to_owned(),
                        exchange: String::new(),
                        routing_key: routing_key.to_owned(),
                    });
                }
            } else if x.delayed && crate::delayed::delay_of(headers).is_some() {
                hop.held = true;
            } else {
                for binding in x.bindings.iter() {
                    match takes(x.kind, binding, routing_key, headers) {
                        true => matched.push(binding),
                        false => hop.missed += 1,
                    }
                }
            }
            let first = pending.len();
            for binding in &matched {
                match &binding.destination {
                    Destination::Queue(q) => {
                        if !out.queues.iter().any(|a| a.queue == q.as_str()) {
                            out.queues.push(Arrival {
                                queue: q.to_string(),
                                exchange: name.to_owned(),
                                routing_key: binding.routing_key.clone(),
                            });
                        }
                    }
                    Destination::Exchange(to) => pending.push((
                        to.as_str(),
                        Reached::Binding {
                            from: name.to_owned(),
                            routing_key: binding.routing_key.clone(),
                        },
                    )),
                }
            }
            pending[first..].reverse();
            hop.matched.extend(matched.into_iter().cloned());
            if hop.matched.is_empty() && !hop.held {
                if let Some(alternate) = x.alternate_exchange() {
                    pending.push((
                        alternate,
                        Reached::Alternate {
                            from: name.to_owned(),
                        },
                    ));
                }
            }
            out.hops.push(hop);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::{AMQPValue, FieldTable};

    use super::*;
    use crate::{Exchange, ExchangeName};

    fn exchange(router: &mut Router, name: &str, kind: ExchangeKind, args: FieldTable) {
        let x = Exchange::new(ExchangeName::from(name), kind, false, false, false, args);
        router.declare(x).unwrap();
    }

    fn bind(router: &mut Router, source: &str, to: Destination, key: &str) {
        router.bind(source, to, key, FieldTable::default()).unwrap();
    }

    fn queue(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    /// A topic exchange with an e2e hop to a fanout, an alternate for what
    /// misses, and a loop back.
    fn sample() -> Router {
        let mut router = Router::new();
        let mut alternate = FieldTable::default();
        alternate.insert("alternate-exchange".into(), AMQPValue::LongString("lost".into()));
        exchange(&mut router, "orders", ExchangeKind::Topic, alternate);
        exchange(&mut router, "audit", ExchangeKind::Fanout, FieldTable::default());
        exchange(&mut router, "lost", ExchangeKind::Fanout, FieldTable::default());
        bind(&mut router, "orders", queue("eu"), "orders.eu.*");
        bind(&mut router, "orders", queue("all"), "orders.#");
        bind(&mut router, "orders", Destination::Exchange("audit".into()), "#");
        bind(&mut router, "audit", queue("audit-log"), "");
        bind(&mut router, "audit", Destination::Exchange("orders".into()), "");
        bind(&mut router, "lost", queue("unrouted"), "");
        router
    }

    /// The sample without its catch-all binding to `audit`: what `orders`
    /// does not match goes to its alternate.
    fn without_audit(router: &Router) -> Router {
        let mut narrow = router.clone();
        narrow
            .unbind(
                "orders",
                &Destination::Exchange("audit".into()),
                "#",
                &FieldTable::default(),
            )
            .unwrap();
        narrow
    }

    #[test]
    fn it_names_the_bindings_that_matched_and_the_hops_taken() {
        let router = sample();
        let explained = router.explain("orders", "orders.eu.new", None).unwrap();
        let queues: Vec<(&str, &str, &str)> = explained
            .queues
            .iter()
            .map(|a| (a.queue.as_str(), a.exchange.as_str(), a.routing_key.as_str()))
            .collect();
        assert_eq!(
            queues,
            [
                ("eu", "orders", "orders.eu.*"),
                ("all", "orders", "orders.#"),
                ("audit-log", "audit", "")
            ]
        );
        let hops: Vec<(&str, &Reached, usize, bool)> = explained
            .hops
            .iter()
            .map(|h| (h.exchange.as_str(), &h.reached, h.matched.len(), h.again))
            .collect();
        let via_orders = Reached::Binding {
            from: "orders".into(),
            routing_key: "#".into(),
        };
        let via_audit = Reached::Binding {
            from: "audit".into(),
            routing_key: "".into(),
        };
        assert_eq!(
            hops,
            [
                ("orders", &Reached::Published, 3, false),
                ("audit", &via_orders, 2, false),
                ("orders", &via_audit, 0, true)
            ]
        );
    }

    #[test]
    fn a_miss_goes_to_the_alternate_exchange() {
        let router = sample();
        let narrow = without_audit(&router);
        let explained = narrow.explain("orders", "invoices.new", None).unwrap();
        assert_eq!(explained.hops[0].missed, 2);
        assert_eq!(
            explained.hops[1].reached,
            Reached::Alternate {
                from: "orders".into()
            }
        );
        assert_eq!(explained.queues[0].queue, "unrouted");
        assert!(router.explain("nowhere", "k", None).is_none());
    }

    #[test]
    fn routing_names_the_steps_a_message_takes() {
        let router = sample();
        let edge = |source: &str, destination: &str, to_queue, alternate| crate::Edge {
            source: source.into(),
            destination: match to_queue {
                true => Destination::Queue(destination.into()),
                false => Destination::Exchange(destination.into()),
            },
            alternate,
        };
        let routed = router.route_detail("orders", "orders.eu.new", None);
        assert_eq!(
            routed.edges,
            [
                edge("orders", "eu", true, false),
                edge("orders", "all", true, false),
                edge("orders", "audit", false, false),
                edge("audit", "audit-log", true, false),
            ]
        );
        let narrow = without_audit(&router);
        let missed = narrow.route_detail("orders", "invoices", None);
        assert_eq!(
            missed.edges,
            [
                edge("orders", "lost", false, true),
                edge("lost", "unrouted", true, false)
            ]
        );
    }

    #[test]
    fn it_agrees_with_the_routing_index() {
        let router = sample();
        for key in ["orders.eu.new", "orders.us", "invoices", "", "orders.eu.new.x"] {
            let explained = router.explain("orders", key, None).unwrap();
            let queues: Vec<&str> = explained.queues.iter().map(|a| a.queue.as_str()).collect();
            let mut routed = router.route_detail("orders", key, None).queues;
            let mut by_explain = queues.clone();
            routed.sort_unstable();
            by_explain.sort_unstable();
            assert_eq!(by_explain, routed, "{key}");
        }
    }
}

//! The store against real sled databases and real files in temp dirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use warren_codec::amq_protocol::protocol::BasicProperties;
use warren_codec::amq_protocol::types::FieldTable;
use warren_codec::bytes::Bytes;
use warren_codec::Message;
use warren_store::*;

const WAIT: Duration = Duration::from_secs(30);

fn message(body: Vec<u8>) -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: BasicProperties::default().with_delivery_mode(2).into(),
        body: Bytes::from(body),
    })
}

fn queue(store: &Store, name: &str) -> QueueDef {
    queue_in(store, DEFAULT_VHOST, name)
}

fn queue_in(store: &Store, vhost: &str, name: &str) -> QueueDef {
    let def = QueueDef {
        vhost: vhost.into(),
        name: name.into(),
        id: store.new_queue_id(),
        auto_delete: false,
        arguments: FieldTable::default(),
    };
    store.put_queue(def.clone());
    def
}

/// A confirm the test can wait for.
#[derive(Debug)]
struct Confirm(mpsc::SyncSender<bool>);

impl Durable for Confirm {
    fn done(&self, ok: bool) {
        let _ = self.0.send(ok);
    }
}

/// Waits until everything sent so far is durable.
fn barrier(store: &Store) {
    let (tx, rx) = mpsc::sync_channel(1);
    store.barrier(Arc::new(Confirm(tx)));
    assert!(rx.recv_timeout(WAIT).unwrap(), "the store confirms");
}

fn open(dir: &Path) -> (Store, Recovered) {
    Store::open(dir, 1 << 20).unwrap()
}

fn bodies(store: &Store, q: &RecoveredQueue) -> Vec<(Vec<u8>, bool)> {
    let (tx, rx) = mpsc::sync_channel(1);
    let ids = q.entries.iter().map(|e| e.message).collect();
    store.read(ids, Box::new(move |read| tx.send(read).unwrap()));
    let read = rx.recv_timeout(WAIT).unwrap();
    read.into_iter()
        .zip(&q.entries)
        .map(|(m, e)| (m.unwrap().body.to_vec(), e.deliveries > 0))
        .collect()
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn definitions_messages_acks_and_delivered_marks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (q1, q2);
    {
        let (store, _) = open(dir.path());
        q1 = queue(&store, "q1");
        q2 = queue(&store, "q2");
        // Another virtual host with the same names: kept apart.
        queue_in(&store, "orders", "q1");
        for vhost in [DEFAULT_VHOST, "orders"] {
            store.put_exchange(ExchangeDef {
                vhost: vhost.into(),
                name: "x".into(),
                kind: "fanout".into(),
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            });
        }
        store.put_binding(BindingDef {
            vhost: "orders".into(),
            source: "x".into(),
            destination_kind: DestinationKind::Queue,
            destination: "q1".into(),
            routing_key: "".into(),
            arguments: FieldTable::default(),
        });
        for q in ["q1", "q2", "gone"] {
            store.put_binding(BindingDef {
                vhost: DEFAULT_VHOST.into(),
                source: "x".into(),
                destination_kind: DestinationKind::Queue,
                destination: q.into(),
                routing_key: "".into(),
                arguments: FieldTable::default(),
            });
        }
        let ids: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|b| store.publish(message(b.as_bytes().to_vec()), vec![q1.id, q2.id], None))
            .collect();
        barrier(&store);
        // q1 settles "a"; q2 delivered "b".
        store.settle(q1.id, vec![ids[0]]);
        store.delivered(q2.id, vec![ids[1]]);
        store.close().unwrap();
    }
    let (store, r) = open(dir.path());
    assert_eq!(r.exchanges.len(), 2);
    assert_eq!(r.bindings.len(), 3);
    assert_eq!(r.bindings.iter().filter(|b| b.vhost == "orders").count(), 1);
    assert_eq!(r.cleaned, 1);
    assert!(r.damage.is_empty(), "{:?}", r.damage);
    let find = |name: &str| {
        r.queues
            .iter()
            .find(|q| q.def.name == name && q.def.vhost == DEFAULT_VHOST)
            .unwrap()
    };
    assert_eq!(find("q1").def.id, q1.id);
    assert_eq!(
        bodies(&store, find("q1")),
        [(b"b".to_vec(), false), (b"c".to_vec(), false)]
    );
    assert_eq!(
        bodies(&store, find("q2")),
        [
            (b"a".to_vec(), false),
            (b"b".to_vec(), true),
            (b"c".to_vec(), false)
        ]
    );
    // A new queue never takes an old queue's id.
    assert!(store.new_queue_id() > q2.id);
    // Deleting q2 makes its messages dead; "a" goes with it.
    store.delete_queue(DEFAULT_VHOST, "q2");
    store.forget(q2.id, find("q2").entries.iter().map(|e| e.message).collect());
    store.close().unwrap();
    let (_store, r) = open(dir.path());
    assert_eq!(r.queues.len(), 2);
    let q1 = r.queues.iter().find(|q| q.def.vhost == DEFAULT_VHOST).unwrap();
    assert_eq!(q1.entries.len(), 2);
    assert_eq!(r.bindings.len(), 2);
}

#[test]
fn a_drained_backlog_gives_its_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let q = queue(&store, "q");
    barrier(&store);
    let before = dir_size(dir.path());
    // 40 MiB: several segments.
    let ids: Vec<u64> = (0..40 * 1024)
        .map(|i| store.publish(message(vec![i as u8; 1024]), vec![q.id], None))
        .collect();
    barrier(&store);
    let full = dir_size(&dir.path().join("segments"));
    assert!(full > 40 << 20, "{full}");
    for chunk in ids.chunks(1000) {
        store.settle(q.id, chunk.to_vec());
    }
    // The barrier waits for the emptied segments to be deleted.
    barrier(&store);
    let after = dir_size(dir.path());
    assert!(
        after <= 2 * before.max(1 << 20),
        "{after} octets after draining, {before} before filling"
    );
    store.close().unwrap();
}

/// What a store built for the damage tests holds.
struct Built {
    expected: HashMap<String, u64>,
}

/// Three queues, ~3 segments of messages, some settled, closed cleanly.
fn build(dir: &Path) -> Built {
    let (store, _) = open(dir);
    let queues: Vec<QueueDef> = ["q1", "q2", "q3"].iter().map(|n| queue(&store, n)).collect();
    let mut expected = HashMap::new();
    let mut ids = Vec::new();
    for i in 0..2 * 16 * 1024 + 500u64 {
        // q1 gets everything, q2 every other message, q3 every third.
        let held: Vec<u64> = queues
            .iter()
            .enumerate()
            .filter(|(k, _)| i % (*k as u64 + 1) == 0)
            .map(|(_, q)| q.id)
            .collect();
        let len = 700 + (i % 600) as usize;
        ids.push((
            store.publish(message(vec![i as u8; len]), held.clone(), None),
            held,
        ));
    }
    // Every fifth message settled by every queue holding it, and every
    // seventh delivered.
    for (i, (id, held)) in ids.iter().enumerate() {
        for q in held {
            if i % 5 == 0 {
                store.settle(*q, vec![*id]);
            } else {
                if i % 7 == 0 {
                    store.delivered(*q, vec![*id]);
                }
                let name = &queues.iter().find(|d| d.id == *q).unwrap().name;
                *expected.entry(name.clone()).or_default() += 1;
            }
        }
    }
    store.close().unwrap();
    Built { expected }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.metadata().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.file_name().unwrap() != "lock" {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// One way of damaging a file.
type Harm = (&'static str, fn(&Path));

fn truncate_to(path: &Path, fraction: f64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len((len as f64 * fraction) as u64).unwrap();
}

fn write_at(path: &Path, fraction: f64, bytes: impl FnOnce(&[u8]) -> Vec<u8>) {
    use std::os::unix::fs::FileExt;
    let len = std::fs::metadata(path).unwrap().len();
    if len == 0 {
        return;
    }
    let at = ((len as f64 * fraction) as u64).min(len - 1);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut old = vec![0; (len - at).min(4096) as usize];
    f.read_exact_at(&mut old, at).unwrap();
    f.write_all_at(&bytes(&old), at).unwrap();
}

const HARMS: &[Harm] = &[
    ("truncated to 0", |p| truncate_to(p, 0.0)),
    ("truncated to 10%", |p| truncate_to(p, 0.1)),
    ("truncated to 50%", |p| truncate_to(p, 0.5)),
    ("truncated to 99%", |p| truncate_to(p, 0.99)),
    ("a flipped byte at 10%", |p| {
        write_at(p, 0.1, |b| vec![b[0] ^ 0x5a])
    }),
    ("a flipped byte at 60%", |p| {
        write_at(p, 0.6, |b| vec![b[0] ^ 0x01])
    }),
    ("a flipped byte at the end", |p| {
        write_at(p, 1.0, |b| vec![b[0] ^ 0x80])
    }),
    ("a zeroed page at 30%", |p| write_at(p, 0.3, |b| vec![0; b.len()])),
    ("garbage at 70%", |p| {
        write_at(p, 0.7, |b| {
            b.iter().enumerate().map(|(i, _)| (i * 131 + 7) as u8).collect()
        })
    }),
    ("garbage appended", |p| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(p).unwrap();
        f.write_all(&[0xab; 1000]).unwrap();
    }),
    ("missing", |p| std::fs::remove_file(p).unwrap()),
];

/// Opens a damaged copy: it must refuse, naming a file, or start and account
/// for every message (found, or reported lost), never panic or lose silently.
fn check(dir: &Path, built: &Built, what: &str) -> &'static str {
    let opened = std::panic::catch_unwind(|| Store::open(dir, 1 << 20));
    let opened = opened.unwrap_or_else(|_| panic!("{what}: opening panicked"));
    let (store, r) = match opened {
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(&dir.display().to_string()), "{what}: {text}");
            eprintln!("{what}: {text}");
            return "refused";
        }
        Ok(opened) => opened,
    };
    let mut uncounted = false;
    let mut lost: HashMap<&str, u64> = HashMap::new();
    for d in &r.damage {
        uncounted |= !d.counted;
        for (q, n) in &d.lost {
            *lost.entry(q.as_str()).or_default() += n;
        }
    }
    for (name, expected) in &built.expected {
        let found = r
            .queues
            .iter()
            .find(|q| &q.def.name == name)
            .unwrap_or_else(|| panic!("{what}: queue {name} is gone and no error said so"))
            .entries
            .len() as u64;
        let lost = lost.get(name.as_str()).copied().unwrap_or(0);
        if uncounted {
            assert!(found <= *expected, "{what}: {name} has {found} of {expected}");
        } else {
            // Acks lost to damage bring messages back (at-least-once); never fewer.
            assert!(
                found + lost >= *expected,
                "{what}: {name} has {found} + {lost} lost of {expected}: {:?}",
                r.damage
            );
            if found + lost > *expected {
                assert!(!r.damage.is_empty(), "{what}: acked messages came back silently");
            }
        }
        if found + lost < *expected {
            assert!(!r.damage.is_empty(), "{what}: silent loss in {name}");
        }
    }
    // Whatever it recovered reads back.
    for q in &r.queues {
        let (tx, rx) = mpsc::sync_channel(1);
        store.read(
            q.entries.iter().map(|e| e.message).collect(),
            Box::new(move |read| tx.send(read).unwrap()),
        );
        for m in rx.recv_timeout(WAIT).unwrap() {
            m.unwrap_or_else(|e| panic!("{what}: a recovered message does not read: {e}"));
        }
    }
    store.close().unwrap();
    if r.damage.is_empty() {
        "intact"
    } else {
        "reported"
    }
}

#[test]
fn damage_is_refused_or_reported_never_silent() {
    let original = tempfile::tempdir().unwrap();
    let built = build(original.path());
    let targets = files(original.path());
    let segs = targets
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .count();
    assert!(segs >= 3, "{targets:?}");
    let mut outcomes: Vec<String> = Vec::new();
    for target in &targets {
        let rel = target.strip_prefix(original.path()).unwrap();
        for (harm, apply) in HARMS {
            let copy = tempfile::tempdir().unwrap();
            copy_dir(original.path(), copy.path());
            apply(&copy.path().join(rel));
            let what = format!("{} {harm}", rel.display());
            let outcome = check(copy.path(), &built, &what);
            outcomes.push(format!("{what}: {outcome}"));
        }
    }
    eprintln!("{}", outcomes.join("\n"));
}

fn segments_size(dir: &Path) -> u64 {
    files(&dir.join("segments"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn a_message_settled_before_its_commit_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let q = queue(&store, "q");
    barrier(&store);
    let before = segments_size(dir.path());
    // Hold the store's thread inside a read's reply, so that what follows
    // is taken in one round.
    let (release, held) = mpsc::channel::<()>();
    let (entered, in_reply) = mpsc::channel::<()>();
    store.read(
        Vec::new(),
        Box::new(move |_| {
            entered.send(()).unwrap();
            held.recv_timeout(WAIT).unwrap();
        }),
    );
    in_reply.recv_timeout(WAIT).unwrap();
    let mut confirms = Vec::new();
    let mut kept = Vec::new();
    for i in 0..200 {
        let (tx, rx) = mpsc::sync_channel(1);
        let id = store.publish(message(vec![7; 1024]), vec![q.id], Some(Arc::new(Confirm(tx))));
        confirms.push(rx);
        if i % 2 == 0 {
            // Delivered, then acked, before the commit.
            store.delivered(q.id, vec![id]);
            store.settle(q.id, vec![id]);
        } else {
            kept.push(id);
        }
    }
    release.send(()).unwrap();
    for rx in confirms {
        assert!(rx.recv_timeout(WAIT).unwrap(), "every publish is confirmed");
    }
    let written = segments_size(dir.path()) - before;
    assert!(
        (100 * 1024..110 * 1024).contains(&written),
        "{written} octets written for 100 kept messages of 1 KiB"
    );
    store.close().unwrap();
    let (_store, r) = open(dir.path());
    let ids: Vec<u64> = r.queues[0].entries.iter().map(|e| e.message).collect();
    assert_eq!(ids, kept);
}

#[test]
fn paged_out_messages_read_back_give_their_space_back_and_are_gone_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let transient_dir = dir.path().join("segments-transient");
    let ids: Vec<u64>;
    {
        let (store, _) = open(dir.path());
        let q = store.new_queue_id();
        // 40 MiB: several transient segments.
        ids = (0..40 * 1024u32)
            .map(|i| store.page_out(message(i.to_be_bytes().repeat(256)), q))
            .collect();
        barrier(&store);
        let full = dir_size(&transient_dir);
        assert!(full > 40 << 20);
        let (tx, rx) = mpsc::sync_channel(1);
        store.read(ids.clone(), Box::new(move |read| tx.send(read).unwrap()));
        for (i, m) in rx.recv_timeout(WAIT).unwrap().into_iter().enumerate() {
            assert_eq!(m.unwrap().body[..4], (i as u32).to_be_bytes());
        }
        // Nothing of it in the message log: it is not durable.
        assert!(segments_size(dir.path()) < 1 << 20);
        store.settle(q, ids[..20 * 1024].to_vec());
        barrier(&store);
        // Whole segments go: the first, all settled, is deleted.
        let half = dir_size(&transient_dir);
        assert!(half <= full - (16 << 20), "{half} of {full}");
        // A restart forgets the rest.
    }
    let (_store, r) = open(dir.path());
    assert!(r.queues.is_empty());
    assert!(dir_size(&transient_dir) < 1 << 20);
}

/// A store written before permissions existed (no `permissions` tree): its
/// users had every right in every vhost, and keep them, written once, at
/// the first open, and there after.
#[test]
fn users_of_a_store_from_before_permissions_keep_every_right() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (store, _) = open(dir.path());
        store.put_vhost(DEFAULT_VHOST);
        store.put_vhost("orders");
        store.put_user(UserDef {
            name: "app".into(),
            password_hash: String::new(),
            tags: vec![],
        });
        barrier(&store);
        store.close().unwrap();
    }
    {
        // What an earlier Warren left: no permission trees at all.
        // The store's sled settings (its 64 KiB segments).
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(64 * 1024)
            .open()
            .unwrap();
        assert!(db.drop_tree("permissions").unwrap());
        assert!(db.drop_tree("topic_permissions").unwrap());
        db.flush().unwrap();
    }
    for _ in 0..2 {
        let (store, recovered) = open(dir.path());
        let mut granted: Vec<(String, String, String)> = recovered
            .permissions
            .iter()
            .map(|p| {
                (
                    p.user.clone(),
                    p.vhost.clone(),
                    format!("{} {} {}", p.configure, p.write, p.read),
                )
            })
            .collect();
        granted.sort();
        let everything = ".* .* .*".to_owned();
        assert_eq!(
            granted,
            [
                ("app".to_owned(), "/".to_owned(), everything.clone()),
                ("app".to_owned(), "orders".to_owned(), everything)
            ]
        );
        store.close().unwrap();
    }
}
